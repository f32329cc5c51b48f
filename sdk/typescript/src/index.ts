// The Turnstone API client for TypeScript: request and response types generated from
// openapi/openapi.json by openapi-typescript (`schema.d.ts`, written by scripts/sdk), requests
// through openapi-fetch, problems raised as `TurnstoneError`, and `streamEvents`, a reader of a
// session's event stream that resumes where it left off (generators do not do SSE).

import createClient from "openapi-fetch";

import type { components, paths } from "./schema.js";

export type { components, paths };
export type Event = components["schemas"]["Event"];
export type Problem = components["schemas"]["Problem"];

/** A client for `baseUrl` (e.g. `http://127.0.0.1:8080`) whose requests carry `apiKey`. */
export function createTurnstoneClient(baseUrl: string, apiKey: string) {
  return createClient<paths>({ baseUrl, headers: { Authorization: `Bearer ${apiKey}` } });
}

/** An error the API answered with: its RFC 9457 problem (`code` is stable; match on it). */
export class TurnstoneError extends Error {
  readonly status: number;
  readonly code: string;
  readonly problem: Problem;
  constructor(problem: Problem) {
    super(`${problem.code} (${problem.status}): ${problem.detail}`);
    this.name = "TurnstoneError";
    this.status = problem.status;
    this.code = problem.code;
    this.problem = problem;
  }
}

/** The data of an openapi-fetch result, or its problem thrown as a `TurnstoneError`. */
export function unwrap<T>(result: { data?: T; error?: unknown; response: Response }): T {
  if (result.error !== undefined || !result.response.ok) {
    const problem = result.error as Partial<Problem> | undefined;
    throw new TurnstoneError({
      type: problem?.type ?? "about:blank",
      title: problem?.title ?? result.response.statusText,
      status: problem?.status ?? result.response.status,
      detail: problem?.detail ?? "",
      code: problem?.code ?? `http_${result.response.status}`,
    });
  }
  return result.data as T;
}

/** A live token delta: not stored, no id; lost while reconnecting. */
export interface Delta {
  type: "output.message.delta";
  ts: string;
  session_id: string;
  turn_id: string;
  data: { delta: string; iteration: number };
}

export type StreamItem = { kind: "event"; event: Event } | { kind: "delta"; delta: Delta };

export interface StreamOptions {
  /** Start after this stored event (`evt_…`); default: the session's first event. */
  sinceId?: string;
  /** The server's heartbeat interval (15 s); a read waits twice this long for a byte. */
  heartbeatMs?: number;
  /** Stops the stream. */
  signal?: AbortSignal;
}

/**
 * Reads a session's events from `GET /v1/sessions/{id}/sse`: every stored event once, in order,
 * and live deltas while connected. It reconnects after `disconnecting` (waiting its `retry_ms`),
 * a dropped connection, or a read silent for twice the heartbeat, sending `Last-Event-ID`: the id
 * of the last stored event it yielded. A problem answer (a revoked key, no such session) throws a
 * `TurnstoneError`.
 */
export async function* streamEvents(
  baseUrl: string,
  apiKey: string,
  sessionId: string,
  options: StreamOptions = {},
): AsyncGenerator<StreamItem> {
  const heartbeatMs = options.heartbeatMs ?? 15_000;
  let lastId = options.sinceId;
  let pause = 0;
  let failures = 0;
  while (!options.signal?.aborted) {
    if (pause > 0) await new Promise((resolve) => setTimeout(resolve, pause));
    pause = 0;
    const abort = new AbortController();
    const stop = () => abort.abort();
    options.signal?.addEventListener("abort", stop);
    let idle: ReturnType<typeof setTimeout> | undefined;
    const arm = () => {
      clearTimeout(idle);
      idle = setTimeout(stop, 2 * heartbeatMs);
    };
    try {
      const headers: Record<string, string> = { Authorization: `Bearer ${apiKey}`, Accept: "text/event-stream" };
      if (lastId) headers["Last-Event-ID"] = lastId;
      arm();
      let response: Response;
      try {
        response = await fetch(`${baseUrl}/v1/sessions/${encodeURIComponent(sessionId)}/sse`, { headers, signal: abort.signal });
      } catch (e) {
        if (options.signal?.aborted) return;
        failures += 1;
        pause = Math.min(250 * 2 ** Math.min(failures, 5), 5_000);
        continue;
      }
      if (!response.ok || !response.body) {
        let problem: unknown;
        try {
          problem = await response.json();
        } catch {
          problem = undefined;
        }
        unwrap({ error: problem ?? {}, response });
      }
      failures = 0;
      const decoder = new TextDecoder();
      let buffer = "";
      let frame = { event: "", id: "", data: [] as string[] };
      const reader = response.body!.getReader();
      reading: while (true) {
        let chunk: ReadableStreamReadResult<Uint8Array>;
        try {
          chunk = await reader.read();
        } catch {
          break; // dropped or silent: reconnect
        }
        if (chunk.done) break;
        arm();
        buffer += decoder.decode(chunk.value, { stream: true });
        let newline: number;
        while ((newline = buffer.search(/\r\n|\r|\n/)) >= 0) {
          const line = buffer.slice(0, newline);
          buffer = buffer.slice(newline + (buffer.startsWith("\r\n", newline) ? 2 : 1));
          if (line === "") {
            const { event, id, data } = frame;
            frame = { event: "", id: "", data: [] };
            if (data.length === 0) continue;
            const json = JSON.parse(data.join("\n"));
            if (event === "disconnecting") {
              pause = Number(json.retry_ms ?? 1000);
              break reading;
            } else if (event === "output.message.delta") {
              yield { kind: "delta", delta: json as Delta };
            } else if (id) {
              lastId = id;
              yield { kind: "event", event: json as Event };
            }
            continue;
          }
          if (line.startsWith(":")) continue; // heartbeat
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          let value = colon < 0 ? "" : line.slice(colon + 1);
          if (value.startsWith(" ")) value = value.slice(1);
          if (field === "event") frame.event = value;
          else if (field === "id") frame.id = value;
          else if (field === "data") frame.data.push(value);
        }
      }
      await reader.cancel().catch(() => undefined);
    } finally {
      clearTimeout(idle);
      options.signal?.removeEventListener("abort", stop);
      abort.abort();
    }
  }
}
