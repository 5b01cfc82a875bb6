// Server-Sent Events over fetch(), so the key travels in a header (EventSource cannot send
// one): frames are parsed here, and a lost stream is opened again after a growing pause.

const FIRST_DELAY = 1000;
const MAX_DELAY = 30000;

// Complete frames out of `buffer` and what is left of it: each frame is
// {event, data} (data lines joined by "\n") or {comment} for a ":" line.
export function parseFrames(buffer) {
  const frames = [];
  const held = buffer.endsWith("\r") ? "\r" : ""; // maybe the first half of "\r\n"
  const text = buffer.slice(0, buffer.length - held.length).replace(/\r\n?/g, "\n");
  const blocks = text.split("\n\n");
  const rest = blocks.pop() + held;
  for (const block of blocks) {
    let event = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (line.startsWith(":")) {
        frames.push({ comment: line.slice(1).trim() });
        continue;
      }
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") event = value;
      else if (field === "data") data.push(value);
    }
    if (data.length) frames.push({ event, data: data.join("\n") });
  }
  return { frames, rest };
}

export class EventReader {
  // handlers: onEvent(payload), onOpen(), onState(state, detail), onUnauthorized()
  constructor(url, headers, handlers) {
    this.url = url;
    this.headers = headers;
    this.handlers = handlers;
    this.stopped = false;
    this.controller = null;
    this.delay = FIRST_DELAY;
  }

  start() {
    this.run();
    return this;
  }

  stop() {
    this.stopped = true;
    if (this.controller) this.controller.abort();
  }

  async run() {
    while (!this.stopped) {
      let why = "the stream ended";
      try {
        why = (await this.once()) || why;
      } catch (error) {
        if (this.stopped) return;
        why = error.message;
      }
      if (this.stopped) return;
      const wait = this.delay * (0.8 + 0.4 * Math.random());
      this.delay = Math.min(this.delay * 2, MAX_DELAY);
      this.handlers.onState("reconnecting", `${why}; again in ${Math.round(wait / 1000)} s`);
      await new Promise((resolve) => setTimeout(resolve, wait));
    }
  }

  // One connection: answers why it ended when it ends without an exception.
  async once() {
    this.controller = new AbortController();
    this.handlers.onState("connecting", "");
    const response = await fetch(this.url, {
      headers: this.headers(),
      cache: "no-store",
      signal: this.controller.signal,
    });
    if (response.status === 401) {
      this.stopped = true;
      this.handlers.onUnauthorized();
      return "the key was refused";
    }
    if (!response.ok || !response.body) return `the API answered ${response.status}`;
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return "the stream ended";
      const { frames, rest } = parseFrames(buffer + value);
      buffer = rest;
      for (const frame of frames) {
        if (frame.comment === "subscribed") {
          this.delay = FIRST_DELAY;
          this.handlers.onState("live", "");
          this.handlers.onOpen();
        } else if (frame.data !== undefined) {
          let payload;
          try {
            payload = JSON.parse(frame.data);
          } catch {
            continue;
          }
          if (frame.event === "error") return payload.error || "the stream reported an error";
          this.handlers.onEvent(payload);
        }
      }
    }
  }
}
