#!/usr/bin/env node
// The whole test command: type-check, lint, then the vitest suite. Prints
// "N passed, M failed[, K skipped]" alone on the last line, which is what CI reads; a failed
// type-check or lint counts as one failure each. Exits non-zero on any failure or no test run.
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const checks = [
  ["typecheck", ["run", "typecheck"]],
  ["lint", ["run", "lint"]],
];
let checkFailures = 0;
for (const [name, args] of checks) {
  console.log(`\n[test] ${name}: npm ${args.join(" ")}`);
  const r = spawnSync("npm", args, { stdio: "inherit" });
  if (r.status !== 0) {
    console.log(`[test] ${name} FAILED`);
    checkFailures++;
  }
}

console.log("\n[test] vitest: the whole suite");
const dir = mkdtempSync(join(tmpdir(), "sluice-test-report-"));
const report = join(dir, "report.json");
const args = [
  "vitest",
  "run",
  "--reporter=default",
  "--reporter=json",
  `--outputFile.json=${report}`,
  ...process.argv.slice(2),
];
const run = spawnSync("npx", args, { stdio: "inherit" });

let passed = 0;
let failed = 0;
let skipped = 0;
try {
  const json = JSON.parse(readFileSync(report, "utf8"));
  passed = json.numPassedTests ?? 0;
  failed = json.numFailedTests ?? 0;
  skipped = (json.numPendingTests ?? 0) + (json.numTodoTests ?? 0);
  for (const suite of json.testResults ?? []) {
    // A file that failed to load has no assertions but must count as a failure.
    if (suite.status === "failed" && (suite.assertionResults ?? []).length === 0) failed += 1;
  }
} catch (err) {
  console.error(`could not read the vitest report: ${err.message}`);
  failed += 1;
}
rmSync(dir, { recursive: true, force: true });
if (run.status !== 0 && failed === 0) failed = 1;
failed += checkFailures;
console.log(`${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ""}`);
process.exit(failed > 0 || passed === 0 ? 1 : 0);
