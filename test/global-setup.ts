import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";

/**
 * Installs what the integration tests start for real. nats-server comes from Debian's
 * packages; no test is ever skipped because a component is missing.
 */
function ensureDebianPackage(binary: string, pkg: string): void {
  const found = ["/usr/sbin", "/usr/bin", "/usr/local/bin"].some((d) => existsSync(`${d}/${binary}`));
  if (found) return;
  console.log(`[test setup] ${binary} not found: installing Debian package ${pkg}`);
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  execFileSync("apt-get", ["update", "-qq"], { stdio: "inherit", env });
  execFileSync("apt-get", ["install", "-y", "-qq", pkg], { stdio: "inherit", env });
}

/** Builds dist/ once (codegen + tsc), for the tests that run the built `sluice` binary. */
function build(): void {
  const root = fileURLToPath(new URL("..", import.meta.url));
  console.log("[test setup] building dist/ (npm run build) for the CLI tests");
  execFileSync("npm", ["run", "build"], { cwd: root, stdio: ["ignore", "ignore", "inherit"] });
}

export default function setup(): void {
  ensureDebianPackage("nats-server", "nats-server");
  build();
}
