import {
  CasFailedError,
  ConflictError,
  MissingReferenceError,
  StoreClosedError,
  StoreFailedError,
  ValidationError,
} from "../../state/index.js";
import { RemoteWriteError } from "./errors.js";

/*
 * Errors of forwarded writes cross NATS as { name, message, fields } and come back as
 * instances of the same classes, so the edge maps them to the same gRPC and HTTP statuses
 * as the writer would.
 */

/** The classes a commit on the writer can fail with. */
const KNOWN: readonly (abstract new (...args: never[]) => Error)[] = [
  ValidationError,
  MissingReferenceError,
  CasFailedError,
  ConflictError,
  StoreClosedError,
  StoreFailedError,
];

export interface WireError {
  readonly name: string;
  readonly message: string;
  readonly fields: Record<string, unknown>;
}

export function errorToWire(err: unknown): WireError {
  if (!(err instanceof Error)) return { name: "Error", message: String(err), fields: {} };
  const fields: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(err)) {
    if (k === "name" || k === "cause" || k === "stack") continue;
    if (v === null || ["string", "number", "boolean"].includes(typeof v)) fields[k] = v;
  }
  return { name: err.name, message: err.message, fields };
}

export function errorFromWire(w: WireError): Error {
  const cls = KNOWN.find((c) => c.name === w.name);
  if (!cls) return new RemoteWriteError(w.name, w.message);
  const err = Object.create(cls.prototype) as Error;
  Object.defineProperty(err, "message", { value: w.message, enumerable: false, writable: true });
  Object.assign(err, w.fields);
  Object.defineProperty(err, "name", { value: w.name, enumerable: false });
  Object.defineProperty(err, "stack", {
    value: `${w.name}: ${w.message}\n    (on the writer)`,
    enumerable: false,
  });
  return err;
}
