/*
 * One client process of the `broker` suite: N connections that are either requesters or
 * responders, through a Sluice component broker or through plain NATS.
 *
 * - Sluice: each connection is a component (`sluice.v1.Broker/Connect`, grpc-js client built
 *   from the .proto, its own TCP connection) that registers `{name, id, concurrency}` and
 *   waits for `registered`. Responders answer every request at once with an OK response
 *   echoing the payload (`parent_id` = the request's id). Requesters send requests to the
 *   group `target` (any replica) with an absolute deadline.
 * - NATS: each connection is a `nats` client connection; responders subscribe to the subject
 *   in one queue group and `msg.respond(msg.data)`; requesters call `nc.request` (the client's
 *   shared reply inbox, as the broker's own NATS link does).
 *
 * Requesters run a closed loop: `inFlight` workers, spread over the connections, each sending
 * one request and waiting for its response before the next. Latency (send → response) of the
 * responses that arrive inside the measured window goes into a histogram. Correctness: every
 * response must answer a request in flight, once, with the request's payload and status OK;
 * anything else is counted, and requests still unanswered when the loop stops (after waiting
 * up to the deadline plus 2 s) are counted as missing.
 */
import * as grpc from "@grpc/grpc-js";
import { connect, type NatsConnection, type Subscription } from "nats";
import type { BrokerClient } from "../../src/generated/sluice/v1/Broker.js";
import type { BrokerEvent, BrokerEvent__Output } from "../../src/generated/sluice/v1/BrokerEvent.js";
import type { Envelope__Output } from "../../src/generated/sluice/v1/Envelope.js";
import { sluiceV1 } from "../../src/proto/index.js";
import { serve } from "./child.js";
import { Histogram, type HistogramData } from "./histogram.js";

export type Transport = "sluice" | "nats";
export type Role = "requester" | "responder";

export interface BrokerOpenRequest {
  readonly transport: Transport;
  readonly role: Role;
  /** Sluice: host:port of the gRPC listener. NATS: the server URL. */
  readonly address: string;
  readonly connections: number;
  /** Sluice: the component name these connections register (ids `<name>-<pid>-<i>`). NATS: the subject responders take. */
  readonly name: string;
  /** Sluice: `register.concurrency` of each connection. */
  readonly concurrency: number;
}

export interface BrokerRunRequest {
  /** Sluice: the target group name. NATS: the subject. */
  readonly target: string;
  readonly inFlight: number;
  readonly payloadBytes: number;
  readonly warmupMs: number;
  readonly durationMs: number;
  /** Each request's deadline (Sluice `deadline_ms` = now + this) or timeout (NATS). */
  readonly timeoutMs: number;
}

/** A requester process's run: the measured window plus correctness over the whole run. */
export interface BrokerRunResult {
  /** Requests sent during warm-up, window and the drain. */
  readonly sent: number;
  /** OK responses with the request's payload. */
  readonly ok: number;
  /** Error responses (status ≠ OK; NATS: request errors), by status code or error text. */
  readonly errors: number;
  readonly errorKinds: Readonly<Record<string, number>>;
  readonly firstError?: string;
  /** Responses for a request that was not in flight (never sent, or answered already). */
  readonly unexpected: number;
  /** OK responses whose payload differed from the request's. */
  readonly payloadMismatch: number;
  /** Requests without any response when the run ended. */
  readonly missing: number;
  /** Connections that failed during the run. */
  readonly connectionErrors: number;
  /** Round trips completed inside the window, and its length. */
  readonly windowRoundTrips: number;
  readonly windowMs: number;
  readonly latency: HistogramData;
}

export interface ResponderStats {
  /** Requests received and responses written since the last reset. */
  readonly received: number;
  readonly answered: number;
  /** Envelopes that were not requests, and connection failures. */
  readonly other: number;
  readonly connectionErrors: number;
  readonly firstError?: string;
}

const REQUEST = "ENVELOPE_KIND_REQUEST";
const RESPONSE = "ENVELOPE_KIND_RESPONSE";

/** Own subchannel per connection, so that every component has its own TCP connection. */
const CHANNEL_OPTIONS: grpc.ChannelOptions = {
  "grpc.use_local_subchannel_pool": 1,
  "grpc.max_receive_message_length": 64 * 1024 * 1024,
};

interface InFlight {
  readonly t0: number;
  readonly payload: Buffer;
  readonly done: () => void;
}

/** What a requester connection does for the loop. */
interface RequesterConn {
  /** Sends one request; its response (or error) goes to {@link arrived}. */
  send(id: string, payload: Buffer, timeoutMs: number): void;
  close(): Promise<void>;
}

// ---------------------------------------------------------------------------------------------
// Run state (one run at a time)

const hist = new Histogram();
let sent = 0;
let ok = 0;
let errors = 0;
let errorKinds: Record<string, number> = {};
let firstError: string | undefined;
let unexpected = 0;
let payloadMismatch = 0;
let connectionErrors = 0;
let windowOpen = false;
let windowRoundTrips = 0;
const pending = new Map<string, InFlight>();

function resetRun(): void {
  hist.reset();
  sent = 0;
  ok = 0;
  errors = 0;
  errorKinds = {};
  firstError = undefined;
  unexpected = 0;
  payloadMismatch = 0;
  connectionErrors = 0;
  windowOpen = false;
  windowRoundTrips = 0;
}

function countError(kind: string, detail: string): void {
  errors++;
  errorKinds[kind] = (errorKinds[kind] ?? 0) + 1;
  firstError ??= `${kind}: ${detail}`;
}

/** A response (or error) for request `id`; `payload` undefined for an error. */
function arrived(
  id: string,
  payload: Uint8Array | undefined,
  error?: { kind: string; detail: string },
): void {
  const p = pending.get(id);
  if (!p) {
    unexpected++;
    return;
  }
  pending.delete(id);
  if (error) countError(error.kind, error.detail);
  else if (!payload || Buffer.compare(p.payload, payload) !== 0) payloadMismatch++;
  else {
    ok++;
    if (windowOpen) {
      windowRoundTrips++;
      hist.record((performance.now() - p.t0) * 1000);
    }
  }
  p.done();
}

// ---------------------------------------------------------------------------------------------
// Sluice connections

function sluiceClient(address: string): BrokerClient {
  return new sluiceV1.Broker(address, grpc.credentials.createInsecure(), CHANNEL_OPTIONS) as BrokerClient;
}

interface SluiceConn {
  readonly client: BrokerClient;
  readonly call: grpc.ClientDuplexStream<BrokerEvent, BrokerEvent__Output>;
  readonly ref: { name: string; id: string };
  closing: boolean;
}

/** Opens a component connection and waits for `registered`. */
function openSluice(
  address: string,
  name: string,
  id: string,
  concurrency: number,
  onEvent: (c: SluiceConn, e: Envelope__Output) => void,
  onError: (c: SluiceConn, err: grpc.ServiceError) => void,
): Promise<SluiceConn> {
  const client = sluiceClient(address);
  const call = client.Connect();
  const conn: SluiceConn = { client, call, ref: { name, id }, closing: false };
  return new Promise((resolve, reject) => {
    let registered = false;
    call.on("data", (m: BrokerEvent__Output) => {
      if (m.msg === "event") onEvent(conn, m.event!);
      else if (m.msg === "registered" && !registered) {
        registered = true;
        resolve(conn);
      }
    });
    call.on("error", (err: grpc.ServiceError) => {
      if (conn.closing && err.code === grpc.status.CANCELLED) return;
      if (!registered) reject(new Error(`component ${name}/${id}: ${err.code} ${err.details}`));
      else onError(conn, err);
    });
    call.on("end", () => {});
    call.write({ register: { name, id, concurrency } });
  });
}

function closeSluice(c: SluiceConn): Promise<void> {
  c.closing = true;
  c.call.end();
  c.call.cancel();
  c.client.close();
  return Promise.resolve();
}

// ---------------------------------------------------------------------------------------------
// Responders

let rReceived = 0;
let rAnswered = 0;
let rOther = 0;
let rConnErrors = 0;
let rFirstError: string | undefined;

async function openResponders(r: BrokerOpenRequest): Promise<() => Promise<void>> {
  if (r.transport === "nats") {
    const conns: NatsConnection[] = [];
    const subs: Subscription[] = [];
    for (let i = 0; i < r.connections; i++) {
      const nc = await connect({ servers: r.address, name: `bench-responder-${process.pid}-${i}` });
      conns.push(nc);
      subs.push(
        nc.subscribe(r.name, {
          queue: "echo",
          callback: (err, msg) => {
            if (err) {
              rConnErrors++;
              rFirstError ??= String(err);
              return;
            }
            rReceived++;
            msg.respond(msg.data);
            rAnswered++;
          },
        }),
      );
      await nc.flush(); // the subscription has reached the server
    }
    return async () => {
      for (const s of subs) s.unsubscribe();
      await Promise.all(conns.map((nc) => nc.close()));
    };
  }
  const conns: SluiceConn[] = [];
  let next = 0;
  const onEvent = (c: SluiceConn, e: Envelope__Output) => {
    if (e.kind !== REQUEST) {
      rOther++;
      return;
    }
    rReceived++;
    c.call.write({
      event: {
        id: `${c.ref.id}.${next++}`,
        kind: RESPONSE,
        parent_id: e.id,
        source: c.ref,
        target: e.source,
        deadline_ms: e.deadline_ms,
        content_type: e.content_type,
        payload: e.payload,
      },
    });
    rAnswered++;
  };
  const onError = (_c: SluiceConn, err: grpc.ServiceError) => {
    rConnErrors++;
    rFirstError ??= `${err.code} ${err.details}`;
  };
  for (let i = 0; i < r.connections; i++) {
    conns.push(
      await openSluice(r.address, r.name, `${r.name}-${process.pid}-${i}`, r.concurrency, onEvent, onError),
    );
  }
  return async () => {
    await Promise.all(conns.map(closeSluice));
  };
}

// ---------------------------------------------------------------------------------------------
// Requesters

async function openRequesters(r: BrokerOpenRequest, target: () => string): Promise<RequesterConn[]> {
  const out: RequesterConn[] = [];
  if (r.transport === "nats") {
    for (let i = 0; i < r.connections; i++) {
      const nc = await connect({ servers: r.address, name: `bench-requester-${process.pid}-${i}` });
      out.push({
        send(id, payload, timeoutMs) {
          nc.request(target(), payload, { timeout: timeoutMs }).then(
            (m) => arrived(id, m.data),
            (err: Error & { code?: string }) =>
              arrived(id, undefined, { kind: `nats ${err.code ?? err.name}`, detail: err.message }),
          );
        },
        close: () => nc.close(),
      });
    }
    return out;
  }
  const onEvent = (_c: SluiceConn, e: Envelope__Output) => {
    if (e.kind !== RESPONSE) {
      unexpected++;
      return;
    }
    if (e.status_code !== 0) {
      arrived(e.parent_id, undefined, {
        kind: `status ${e.status_code}`,
        detail: `${e.status_message} (from ${e.source?.name})`,
      });
    } else arrived(e.parent_id, e.payload);
  };
  const onError = (_c: SluiceConn, err: grpc.ServiceError) => {
    connectionErrors++;
    firstError ??= `connection: ${err.code} ${err.details}`;
  };
  for (let i = 0; i < r.connections; i++) {
    const c = await openSluice(
      r.address,
      r.name,
      `${r.name}-${process.pid}-${i}`,
      r.concurrency,
      onEvent,
      onError,
    );
    out.push({
      send(id, payload, timeoutMs) {
        c.call.write({
          event: {
            id,
            kind: REQUEST,
            source: c.ref,
            target: { name: target(), id: "" },
            type: "echo",
            deadline_ms: Date.now() + timeoutMs,
            content_type: "application/octet-stream",
            payload,
          },
        });
      },
      close: () => closeSluice(c),
    });
  }
  return out;
}

let requesters: RequesterConn[] = [];
let currentTarget = "";
let closeResponders: (() => Promise<void>) | undefined;
let role: Role | undefined;
let seq = 0;
const idPrefix = `q${process.pid}.`;

/** One request on connection `conn`; resolves when it is answered (or fails). */
function request(conn: RequesterConn, payloadBytes: number, timeoutMs: number): Promise<void> {
  const id = idPrefix + seq++;
  const payload = Buffer.allocUnsafe(payloadBytes).fill(0x61);
  payload.writeUInt32LE(seq % 4294967296, 0);
  sent++;
  return new Promise<void>((resolve) => {
    pending.set(id, { t0: performance.now(), payload, done: resolve });
    conn.send(id, payload, timeoutMs);
  });
}

interface Running {
  readonly req: BrokerRunRequest;
  stop: boolean;
  workers: Promise<void>;
  windowStart: number;
  windowMs: number;
  opened: Promise<void>;
  closed: Promise<void>;
}
let running: Running | undefined;

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function startRun(req: BrokerRunRequest): Running {
  resetRun();
  currentTarget = req.target;
  const run: Running = {
    req,
    stop: false,
    windowStart: 0,
    windowMs: 0,
    workers: Promise.resolve(),
    opened: Promise.resolve(),
    closed: Promise.resolve(),
  };
  run.workers = Promise.all(
    Array.from({ length: req.inFlight }, async (_, w) => {
      const conn = requesters[w % requesters.length]!;
      while (!run.stop) await request(conn, req.payloadBytes, req.timeoutMs);
    }),
  ).then(() => {});
  run.opened = sleep(req.warmupMs).then(() => {
    hist.reset();
    windowRoundTrips = 0;
    windowOpen = true;
    run.windowStart = performance.now();
  });
  run.closed = run.opened
    .then(() => sleep(req.durationMs))
    .then(() => {
      windowOpen = false;
      run.windowMs = performance.now() - run.windowStart;
      run.stop = true;
    });
  return run;
}

/** Waits for the workers (up to the deadline + 2 s); what is still pending then is missing. */
async function finishRun(run: Running): Promise<BrokerRunResult> {
  await run.closed;
  const t0 = performance.now();
  const limit = run.req.timeoutMs + 2000;
  await Promise.race([run.workers, sleep(limit)]);
  // Anything late or duplicated would show as `unexpected` in this pause.
  await sleep(Math.min(300, Math.max(0, limit - (performance.now() - t0))));
  const missing = pending.size;
  for (const p of pending.values()) p.done();
  pending.clear();
  await run.workers;
  return {
    sent,
    ok,
    errors,
    errorKinds,
    ...(firstError !== undefined ? { firstError } : {}),
    unexpected,
    payloadMismatch,
    missing,
    connectionErrors,
    windowRoundTrips,
    windowMs: run.windowMs,
    latency: hist.toData(),
  };
}

serve({
  open: async (r: BrokerOpenRequest) => {
    if (role) throw new Error("already open: close first");
    role = r.role;
    if (r.role === "responder") closeResponders = await openResponders(r);
    else requesters = await openRequesters(r, () => currentTarget);
    return { pid: process.pid };
  },
  /**
   * Requester: sends single requests to `target` until one is answered OK (the route exists:
   * NATS subscriptions have propagated, the responders are registered); not counted.
   */
  probe: async (arg: { target: string; timeoutMs: number; payloadBytes: number }) => {
    currentTarget = arg.target;
    const t0 = performance.now();
    let attempts = 0;
    for (;;) {
      resetRun();
      attempts++;
      const conn = requesters[0]!;
      await Promise.race([request(conn, arg.payloadBytes, 2000), sleep(2500)]);
      pending.clear();
      if (ok === 1 && requesters.length > 0) {
        // Every connection once more, so that each one's path is warm.
        resetRun();
        await Promise.race([
          Promise.all(requesters.map((c) => request(c, arg.payloadBytes, 2000))),
          sleep(2500),
        ]);
        pending.clear();
        if (ok === requesters.length) return { attempts, ms: performance.now() - t0 };
      }
      if (performance.now() - t0 > arg.timeoutMs)
        throw new Error(`no OK response from ${arg.target} after ${attempts} attempts: ${firstError ?? "?"}`);
      await sleep(50);
    }
  },
  /** Requester: requests sent and answered so far in this run (for progress lines). */
  count: () => ({ sent, ok, errors, windowRoundTrips }),
  /** Requester: starts the closed loop; resolves when the measured window opens (after warm-up). */
  start: async (req: BrokerRunRequest) => {
    if (running) throw new Error("a run is going on");
    running = startRun(req);
    await running.opened;
    return null;
  },
  /** Requester: resolves when the measured window closes. */
  windowEnd: async () => {
    if (!running) throw new Error("start first");
    await running.closed;
    return null;
  },
  /** Requester: stops the loop, waits for the last responses, and reports. */
  finish: async (): Promise<BrokerRunResult> => {
    if (!running) throw new Error("start first");
    try {
      return await finishRun(running);
    } finally {
      running = undefined;
    }
  },
  /** Responder: counters since the last reset. */
  stats: (): ResponderStats => ({
    received: rReceived,
    answered: rAnswered,
    other: rOther,
    connectionErrors: rConnErrors,
    ...(rFirstError !== undefined ? { firstError: rFirstError } : {}),
  }),
  resetStats: () => {
    rReceived = 0;
    rAnswered = 0;
    rOther = 0;
    rConnErrors = 0;
    rFirstError = undefined;
  },
  close: async () => {
    if (running) {
      running.stop = true;
      for (const p of pending.values()) p.done();
      pending.clear();
      running = undefined;
    }
    await closeResponders?.();
    closeResponders = undefined;
    await Promise.all(requesters.map((c) => c.close()));
    requesters = [];
    role = undefined;
  },
  exit: async () => {
    await closeResponders?.();
    await Promise.all(requesters.map((c) => c.close()));
  },
});
