// The fleet around the open queue: the queues that hold jobs, and the live workers with the
// jobs they run. Both are read every few seconds (the API answers them in a few round trips
// whatever the size of the queues).

import { call } from "./api.js";
import { bytes, duration, el, rate } from "./format.js";

export const COUNTS = ["pending", "in_progress", "paused", "completed", "failed", "canceled"];

export class QueueList {
  constructor(list, more, hooks) {
    this.list = list;
    this.more = more;
    this.hooks = hooks; // open(queue), failed(error, what)
    this.pages = [];
    this.next = null;
    this.defaultQueue = null;
    this.selected = null;
    more.addEventListener("click", () => this.read(this.next));
    list.addEventListener("click", (event) => {
      const button = event.target.closest("button[data-queue]");
      if (button) this.hooks.open(button.dataset.queue);
    });
  }

  // Read the first page of queues again (and keep the extra pages asked for, re-read). The
  // pages read so far stay until the new ones are all in: the totals never read a half list.
  async refresh() {
    const wanted = Math.max(1, this.pages.length);
    const pages = [];
    let cursor = 0;
    for (let page = 0; page < wanted && cursor !== null; page += 1) {
      const answer = await this.fetch(cursor);
      if (answer === undefined) return;
      pages.push(answer.queues);
      cursor = answer.next_cursor;
    }
    this.pages = pages;
    this.render();
  }

  // The next page, asked for by the "more" button.
  async read(cursor) {
    const answer = await this.fetch(cursor);
    if (answer === undefined) return;
    this.pages.push(answer.queues);
    this.render();
  }

  async fetch(cursor) {
    let answer;
    try {
      answer = await call("GET", `/api/v1/queues?limit=100&cursor=${cursor || 0}`);
    } catch (error) {
      this.hooks.failed(error, "reading the queues");
      return undefined;
    }
    this.defaultQueue = answer.default_queue;
    this.next = answer.next_cursor;
    return answer;
  }

  queues() {
    const byName = new Map();
    for (const page of this.pages) for (const queue of page) byName.set(queue.queue_id, queue);
    return [...byName.values()].sort((a, b) => a.queue_id.localeCompare(b.queue_id));
  }

  render() {
    const queues = this.queues();
    const names = new Set(queues.map((queue) => queue.queue_id));
    for (const name of [this.defaultQueue, this.selected]) {
      if (name && !names.has(name)) queues.push({ queue_id: name, total: 0, empty: true });
    }
    this.list.replaceChildren(
      ...queues.map((queue) =>
        el(
          "li",
          {
            "data-queue-row": queue.queue_id,
            class: queue.queue_id === this.selected ? "selected" : "",
          },
          el("button", {
            type: "button",
            class: "link",
            "data-queue": queue.queue_id,
            text: queue.queue_id,
          }),
          queue.is_paused ? el("span", { class: "badge paused", text: "paused" }) : null,
          el("span", {
            class: "muted",
            text: queue.empty
              ? "no jobs"
              : COUNTS.filter((name) => queue[name])
                  .map((name) => `${queue[name]} ${name}`)
                  .join(" · ") || `${queue.total} jobs`,
          }),
        ),
      ),
    );
    this.more.hidden = this.next === null;
  }

  // Jobs of every listed queue, per status.
  totals() {
    const sums = Object.fromEntries(COUNTS.map((name) => [name, 0]));
    for (const queue of this.queues()) for (const name of COUNTS) sums[name] += queue[name] || 0;
    return sums;
  }
}

export class WorkerTable {
  constructor(body, empty, rates, series, hooks) {
    this.body = body;
    this.empty = empty;
    this.rates = rates;
    this.series = series;
    this.hooks = hooks; // failed(error, what)
    this.workers = [];
  }

  async refresh() {
    let answer;
    try {
      answer = await call("GET", "/api/v1/workers");
    } catch (error) {
      this.hooks.failed(error, "reading the workers");
      return;
    }
    this.workers = answer.workers;
    for (const worker of this.workers) {
      for (const job of worker.running) {
        this.series.add(this.rates.observe(job.item_id, job.bytes));
      }
    }
    this.render();
  }

  render() {
    const now = Date.now();
    this.body.replaceChildren(
      ...this.workers.map((worker) => {
        const speed = worker.running.reduce(
          (sum, job) => sum + (this.rates.rate(job.item_id) || 0),
          0,
        );
        const jobs = worker.running.map((job) => {
          const percent = job.total_bytes
            ? ` ${Math.floor((100 * job.bytes) / job.total_bytes)}%`
            : "";
          return el(
            "li",
            { "data-job-id": job.item_id, title: job.source || "" },
            `#${job.item_id} (${job.queue_id})${percent} ${bytes(job.bytes)}`,
          );
        });
        return el(
          "tr",
          { "data-worker": worker.name },
          el("td", { class: "name", text: worker.name }),
          el("td", { class: "queues", text: worker.queues.join(", ") }),
          el("td", { class: "count", text: String(worker.jobs) }),
          el("td", { class: "jobs" }, el("ul", {}, ...jobs)),
          el("td", { class: "rate", text: rate(speed) }),
          el("td", {
            class: "seen",
            text: `${duration((now - Date.parse(worker.seen)) / 1000)} ago`,
          }),
        );
      }),
    );
    this.empty.hidden = this.workers.length > 0;
  }
}
