// The enqueue form as one `POST .../enqueue` body (see the API's `EnqueueRequest`): one URL
// is `source`, several are `items`, an `hf://` address is `repo` with its patterns.

const words = (text) => text.split(/[\s,]+/).filter(Boolean);

// The body for the form's values; throws an Error saying what to change.
export function enqueueBody({ sources, dest, priority, sha256, include, exclude }) {
  const lines = sources
    .split("\n")
    .map((line) => line.trim())
    .filter(Boolean);
  if (!lines.length) throw new Error("give a URL");
  if (!dest.trim()) throw new Error("give a destination (a directory under the download root)");
  const number = Number(priority === "" ? 10 : priority);
  if (!Number.isInteger(number)) throw new Error("the priority is a whole number");
  const hub = lines.filter((line) => line.startsWith("hf://"));
  const allow = words(include);
  const ignore = words(exclude);
  if (hub.length) {
    if (lines.length > 1) throw new Error("an hf:// address goes alone, one per request");
    if (sha256.trim()) throw new Error("the hub gives each file's SHA-256: leave it empty");
    const body = { repo: hub[0], dest: dest.trim(), priority: number };
    if (allow.length) body.allow_patterns = allow;
    if (ignore.length) body.ignore_patterns = ignore;
    return body;
  }
  if (allow.length || ignore.length)
    throw new Error("include and exclude go with an hf:// address");
  if (lines.length === 1) {
    const body = { source: lines[0], dest: dest.trim(), priority: number };
    if (sha256.trim()) body.sha256 = sha256.trim();
    return body;
  }
  if (sha256.trim()) throw new Error("a SHA-256 goes with one URL only");
  return { items: lines.map((source) => ({ source, dest: dest.trim(), priority: number })) };
}
