import { BadRequestError } from "./errors.js";

/*
 * Reading Consul-style JSON bodies. Consul decodes field names case-insensitively
 * (mapstructure), so `{"node": …}` and `{"Node": …}` both work here too; unknown fields are
 * ignored. Only shapes are checked here: names, sizes and references are the store's
 * validation's business (ValidationError → 400).
 */

export type JsonObject = Readonly<Record<string, unknown>>;

/** The request body (raw bytes from the catch-all parser) as a JSON object; {} when empty. */
export function jsonBody(body: unknown, what = "body"): JsonObject {
  if (body === undefined || body === null) return {};
  const text = Buffer.isBuffer(body) ? body.toString("utf8") : typeof body === "string" ? body : undefined;
  if (text === undefined) throw new BadRequestError(what, "must be JSON");
  if (text.trim() === "") return {};
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw new BadRequestError(what, `invalid JSON: ${(err as Error).message}`, { cause: err });
  }
  if (typeof doc !== "object" || doc === null || Array.isArray(doc))
    throw new BadRequestError(what, "must be a JSON object");
  return doc as JsonObject;
}

/** A field by name, matched exactly first and then case-insensitively. */
export function field(obj: JsonObject, name: string): unknown {
  if (Object.hasOwn(obj, name)) return obj[name];
  const lower = name.toLowerCase();
  for (const k of Object.keys(obj)) if (k.toLowerCase() === lower) return obj[k];
  return undefined;
}

const absent = (v: unknown): v is undefined | null => v === undefined || v === null;

export function optString(obj: JsonObject, name: string, path = name): string | undefined {
  const v = field(obj, name);
  if (absent(v)) return undefined;
  if (typeof v !== "string") throw new BadRequestError(path, "must be a string");
  return v;
}

export function reqString(obj: JsonObject, name: string, path = name): string {
  const v = optString(obj, name, path);
  if (v === undefined || v === "") throw new BadRequestError(path, "is required");
  return v;
}

export function optNumber(obj: JsonObject, name: string, path = name): number | undefined {
  const v = field(obj, name);
  if (absent(v)) return undefined;
  if (typeof v !== "number" || !Number.isFinite(v)) throw new BadRequestError(path, "must be a number");
  return v;
}

export function optBool(obj: JsonObject, name: string, path = name): boolean | undefined {
  const v = field(obj, name);
  if (absent(v)) return undefined;
  if (typeof v !== "boolean") throw new BadRequestError(path, "must be true or false");
  return v;
}

export function optObject(obj: JsonObject, name: string, path = name): JsonObject | undefined {
  const v = field(obj, name);
  if (absent(v)) return undefined;
  if (typeof v !== "object" || Array.isArray(v)) throw new BadRequestError(path, "must be an object");
  return v as JsonObject;
}

export function optList(obj: JsonObject, name: string, path = name): readonly unknown[] | undefined {
  const v = field(obj, name);
  if (absent(v)) return undefined;
  if (!Array.isArray(v)) throw new BadRequestError(path, "must be a list");
  return v;
}

export function optStringList(obj: JsonObject, name: string, path = name): string[] | undefined {
  const list = optList(obj, name, path);
  if (list === undefined) return undefined;
  return list.map((s, i) => {
    if (typeof s !== "string") throw new BadRequestError(`${path}[${i}]`, "must be a string");
    return s;
  });
}

export function optStringMap(obj: JsonObject, name: string, path = name): Record<string, string> | undefined {
  const m = optObject(obj, name, path);
  if (m === undefined) return undefined;
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(m)) {
    if (typeof v !== "string") throw new BadRequestError(`${path}.${k}`, "must be a string");
    out[k] = v;
  }
  return out;
}

/** A list of objects (`Checks`, `Policies`), each checked to be an object. */
export function optObjectList(obj: JsonObject, name: string, path = name): JsonObject[] | undefined {
  const list = optList(obj, name, path);
  if (list === undefined) return undefined;
  return list.map((o, i) => {
    if (typeof o !== "object" || o === null || Array.isArray(o))
      throw new BadRequestError(`${path}[${i}]`, "must be an object");
    return o as JsonObject;
  });
}
