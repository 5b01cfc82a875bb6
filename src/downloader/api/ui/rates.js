// Transfer rates, derived in the page from the byte counts it sees: progress events of the
// queue it follows, and the running jobs the workers report. Each job's count only grows, so
// whichever source reports a byte first counts it, and no byte counts twice.

const WINDOW = 5; // seconds a job's rate looks back
const HISTORY = 300; // seconds the throughput series keeps
const STEP = 5; // seconds per point of the series

const now = () => Date.now() / 1000;

export class Rates {
  constructor() {
    this.jobs = new Map(); // id -> [[t, bytes], ...], oldest first
    this.parents = new Set(); // multi-file jobs: their bytes are their parts' bytes
  }

  // Note that job `id` has `count` bytes at `t`; answers the bytes it gained since last seen
  // (0 the first time, and when it started over). A multi-file parent (`parent`) has a rate
  // of its own but is left out of `total`, which counts its parts.
  observe(id, count, t = now(), parent = false) {
    if (parent) this.parents.add(id);
    const samples = this.jobs.get(id);
    if (!samples) {
      this.jobs.set(id, [[t, count]]);
      return 0;
    }
    const last = samples[samples.length - 1][1];
    if (count < last) {
      this.jobs.set(id, [[t, count]]);
      return 0;
    }
    if (count === last) return 0;
    samples.push([t, count]);
    while (samples.length > 2 && samples[1][0] < t - 2 * WINDOW) samples.shift();
    return count - last;
  }

  // Bytes per second over the last WINDOW seconds (falling to 0 while nothing comes), or
  // null before there is a span to measure.
  rate(id, t = now()) {
    const samples = this.jobs.get(id);
    if (!samples) return null;
    let base = samples[0];
    for (const sample of samples) if (sample[0] <= t - WINDOW) base = sample;
    const span = t - base[0];
    if (span < 0.5) return null;
    return (samples[samples.length - 1][1] - base[1]) / span;
  }

  forget(id) {
    this.jobs.delete(id);
  }

  // Sum of the rates of every job seen within the window.
  total(t = now()) {
    let sum = 0;
    for (const id of this.jobs.keys()) if (!this.parents.has(id)) sum += this.rate(id, t) || 0;
    return sum;
  }

  // Jobs not heard of for a while are dropped, so the map stays the size of what runs.
  prune(t = now()) {
    for (const [id, samples] of this.jobs) {
      if (samples[samples.length - 1][0] < t - 10 * WINDOW) {
        this.jobs.delete(id);
        this.parents.delete(id);
      }
    }
  }
}

export class Series {
  constructor() {
    this.buckets = new Map(); // start of a STEP-second bucket -> bytes
    this.seen = 0; // bytes added since the page opened
  }

  add(count, t = now()) {
    if (count <= 0) return;
    const start = Math.floor(t / STEP) * STEP;
    this.buckets.set(start, (this.buckets.get(start) || 0) + count);
    this.seen += count;
  }

  // [seconds ago, bytes per second] for every step of the last HISTORY seconds, oldest first
  // (the step in progress is left out: it is not over).
  points(t = now()) {
    const current = Math.floor(t / STEP) * STEP;
    for (const start of this.buckets.keys()) {
      if (start < current - HISTORY) this.buckets.delete(start);
    }
    const found = [];
    for (let start = current - HISTORY; start < current; start += STEP) {
      found.push([current - start, (this.buckets.get(start) || 0) / STEP]);
    }
    return found;
  }
}

export { HISTORY };
