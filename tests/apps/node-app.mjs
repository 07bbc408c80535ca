// A non-Python agent app for the sidecar tests: proof that any language can use the sidecar.
//
// Node.js >= 18 only (built-in fetch and web streams); nothing to install. It opens the event
// stream, registers one session, waits for a close request for it, ends the session with a
// reason and exits 0. Every step is printed as one JSON object per line on stdout.
//
//   SIDECAR_URL=http://127.0.0.1:8555 CALL_ID=call-1 SESSION_ID=s-1 node tests/apps/node-app.mjs

const base = process.env.SIDECAR_URL ?? "http://127.0.0.1:8555";
const callId = process.env.CALL_ID ?? "call-node";
const sessionId = process.env.SESSION_ID ?? `node-${process.pid}`;
const closeReason = process.env.CLOSE_REASON ?? "closed-by-node-app";

const say = (kind, fields = {}) => console.log(JSON.stringify({ kind, ...fields }));

// A tiny Server-Sent Events reader: yields {event, data, id} for each complete event.
async function* readEvents(body) {
  const decoder = new TextDecoder();
  let buffer = "";
  let event = { event: "message", data: [], id: null };
  for await (const chunk of body) {
    buffer += decoder.decode(chunk, { stream: true });
    let newline;
    while ((newline = buffer.search(/\r\n|\r|\n/)) >= 0) {
      const line = buffer.slice(0, newline);
      buffer = buffer.slice(newline + (buffer.startsWith("\r\n", newline) ? 2 : 1));
      if (line === "") {
        if (event.data.length) yield { ...event, data: event.data.join("\n") };
        event = { event: "message", data: [], id: null };
      } else if (!line.startsWith(":")) {
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") event.event = value;
        else if (field === "data") event.data.push(value);
        else if (field === "id") event.id = value;
      }
    }
  }
}

async function call(method, path, body) {
  const response = await fetch(base + path, {
    method,
    headers: body ? { "content-type": "application/json" } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

async function main() {
  const stream = await fetch(`${base}/v1/events`, { headers: { accept: "text/event-stream" } });
  if (stream.status !== 200) throw new Error(`event stream: ${stream.status}`);
  say("stream-open");

  const session = await call("POST", "/v1/sessions", { call_id: callId, session_id: sessionId });
  say("registered", session);

  for await (const raw of readEvents(stream.body)) {
    const data = JSON.parse(raw.data);
    say("event", { type: raw.event, data, id: raw.id });
    if (raw.event === "close_requested" && data.call_id === callId && data.session_id === sessionId) {
      const path = `/v1/calls/${encodeURIComponent(callId)}/sessions/${encodeURIComponent(sessionId)}`;
      await call("DELETE", `${path}?reason=${encodeURIComponent(closeReason)}`);
      say("ended", { call_id: callId, session_id: sessionId, reason: closeReason });
      process.exit(0);
    }
  }
  throw new Error("the event stream ended before the close request");
}

main().catch((error) => {
  say("error", { error: String(error) });
  process.exit(1);
});
