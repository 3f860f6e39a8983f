import { closeSync, openSync, readFileSync, statSync, unlinkSync, writeSync } from "node:fs";
import { join } from "node:path";
import { DataDirLockedError } from "./errors.js";

/** Directories this process holds: a second open in the same process is refused too. */
const held = new Set<string>();

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

function createExclusive(file: string, content: string): boolean {
  try {
    const fd = openSync(file, "wx");
    try {
      writeSync(fd, content);
    } finally {
      closeSync(fd);
    }
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "EEXIST") return false;
    throw err;
  }
}

function readPid(file: string): number {
  try {
    return Number(readFileSync(file, "utf8")) || 0;
  } catch {
    return 0;
  }
}

/**
 * One process per data directory: a `LOCK` file holding the owner's pid. A lock left by a
 * dead process is taken over under a second, short-lived `LOCK.takeover` file, so two
 * processes that both find a stale lock cannot both end up owning the directory.
 */
export function acquireDirLock(dir: string): string {
  const file = join(dir, "LOCK");
  if (held.has(file)) throw new DataDirLockedError(dir, process.pid);
  if (createExclusive(file, String(process.pid))) {
    held.add(file);
    return file;
  }
  const owner = readPid(file);
  if (owner && isAlive(owner)) throw new DataDirLockedError(dir, owner);
  const takeover = `${file}.takeover`;
  try {
    // A takeover file older than 10 s belongs to a process that died while taking over.
    if (Date.now() - statSync(takeover).mtimeMs > 10_000) unlinkSync(takeover);
  } catch {
    // no takeover in progress
  }
  if (!createExclusive(takeover, String(process.pid))) throw new DataDirLockedError(dir, readPid(takeover));
  try {
    const again = readPid(file);
    if (again && isAlive(again)) throw new DataDirLockedError(dir, again);
    try {
      unlinkSync(file);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    }
    if (!createExclusive(file, String(process.pid))) throw new DataDirLockedError(dir, readPid(file));
    held.add(file);
    return file;
  } finally {
    unlinkSync(takeover);
  }
}

export function releaseDirLock(file: string): void {
  held.delete(file);
  try {
    if (readPid(file) === process.pid) unlinkSync(file);
  } catch {
    // already gone
  }
}
