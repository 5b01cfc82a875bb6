// The jobs of one queue, a page at a time by cursor, kept live: progress events change a row
// in place; an event that may change which jobs the page holds makes it read the page again
// (at most once a second), so what it shows is what the API answers.

import { call, queuePath } from "./api.js";
import { bytes, duration, el, fileName, rate } from "./format.js";

export const STATUSES = ["pending", "in_progress", "paused", "completed", "failed", "canceled"];

// The status a lifecycle event leaves its job in; any other event (one this page does not
// know yet too) makes the page read its jobs again.
const AFTER = {
  download_started: "in_progress",
  download_complete: "completed",
  download_error: "failed",
  download_cancelled: "canceled",
  download_paused: "paused",
  download_resumed: "pending",
  multifile_download_started: "in_progress",
  multifile_download_complete: "completed",
  multifile_download_error: "failed",
  multifile_download_cancelled: "canceled",
  multifile_download_paused: "paused",
  multifile_download_resumed: "pending",
};
const PROGRESS = new Set(["download_progress", "multifile_download_progress"]);
const RUNNING = new Set(["in_progress"]);

// Each job control is one request: [method, path, body].
export function request(action, queue, id, priority) {
  const item = `${queuePath(queue)}/i/${id}`;
  if (action === "priority") return ["PATCH", item, { priority }];
  return ["POST", `${item}/${action}`];
}

// The controls a row offers for each status (every one is in the job's dialog).
const QUICK = {
  pending: ["cancel", "pause"],
  in_progress: ["cancel", "pause"],
  paused: ["resume", "cancel"],
  failed: ["retry"],
  canceled: ["retry"],
  completed: [],
};

const LABEL = { cancel: "Cancel", pause: "Pause", resume: "Resume", retry: "Retry" };

export class JobTable {
  constructor(elements, rates, hooks) {
    this.e = elements; // body, empty, info, first, prev, next
    this.rates = rates;
    this.hooks = hooks; // message(text, failed), details(item), unauthorized()
    this.items = new Map();
    this.rows = new Map();
    this.collapsed = new Set();
    this.cursors = [null];
    this.page = null;
    this.queue = null;
    this.status = "";
    this.limit = 50;
    this.loading = null;
    this.again = false;
    this.timer = null;
    elements.body.addEventListener("click", (event) => this.clicked(event));
    elements.first.addEventListener("click", () => this.go([null]));
    elements.prev.addEventListener("click", () => this.go(this.cursors.slice(0, -1)));
    elements.next.addEventListener("click", () => {
      if (this.page && this.page.next_cursor !== null) {
        this.go([...this.cursors, this.page.next_cursor]);
      }
    });
  }

  view(queue, status, limit) {
    this.queue = queue;
    this.status = status;
    this.limit = limit;
    this.go([null]);
  }

  go(cursors) {
    this.cursors = cursors.length ? cursors : [null];
    this.page = null;
    this.items.clear();
    this.load();
  }

  // Read the page again now, or right after the read in flight.
  load() {
    if (this.loading) {
      this.again = true;
      return this.loading;
    }
    this.loading = this.read().finally(() => {
      this.loading = null;
      if (this.again) {
        this.again = false;
        this.load();
      }
    });
    return this.loading;
  }

  // Read the page again within a second (events come in bursts).
  soon() {
    if (this.timer === null) {
      this.timer = setTimeout(() => {
        this.timer = null;
        this.load();
      }, 700);
    }
  }

  async read() {
    const queue = this.queue;
    const params = new URLSearchParams({ limit: String(this.limit) });
    const cursor = this.cursors[this.cursors.length - 1];
    if (cursor !== null) params.set("cursor", String(cursor));
    if (this.status) params.set("status", this.status);
    let page;
    try {
      page = await call("GET", `${queuePath(queue)}/list?${params}`);
    } catch (error) {
      this.hooks.failed(error, "reading the jobs");
      return;
    }
    if (queue !== this.queue) return; // another queue was opened meanwhile
    const previous = this.items;
    this.items = new Map();
    for (const item of page.items) {
      const known = previous.get(item.item_id);
      if (known && known.status === item.status && RUNNING.has(item.status)) {
        item.bytes = Math.max(item.bytes, known.bytes); // an event may be ahead of the read
      }
      if (known && known.parts_done !== undefined) item.parts_done = known.parts_done;
      this.items.set(item.item_id, item);
    }
    this.page = page;
    this.render();
  }

  // Whether job `id` belongs between this page's cursor and the next page's.
  holds(id) {
    const low = this.cursors[this.cursors.length - 1];
    const high = this.page ? this.page.next_cursor : null;
    return (low === null || id > low) && (high === null || id <= high);
  }

  // An event of this queue; answers whether it is a lifecycle event (counts may change).
  apply(payload) {
    const id = payload.job_id;
    const item = this.items.get(id);
    if (PROGRESS.has(payload.event)) {
      if (item) {
        item.bytes = payload.current_bytes;
        item.total_bytes = payload.total_bytes || item.total_bytes;
        if (payload.parts_done !== undefined) item.parts_done = payload.parts_done;
        if (item.status === "pending") {
          item.status = "in_progress";
          this.soon();
        }
        this.update(id);
      } else if (this.holds(id)) {
        this.soon();
      }
      return false;
    }
    if (item && AFTER[payload.event]) {
      item.status = AFTER[payload.event];
      if (payload.event.endsWith("_complete")) item.bytes = payload.total_bytes ?? item.bytes;
      if (payload.parts_done !== undefined) item.parts_done = payload.parts_done;
      if (payload.error_type) item.error_type = payload.error_type;
      this.update(id);
    }
    if (this.holds(id)) this.soon();
    return true;
  }

  render() {
    const { body, empty, info, first, prev, next } = this.e;
    this.rows.clear();
    const rows = [...this.items.values()].map((item) => this.row(item));
    body.replaceChildren(...rows);
    empty.hidden = this.items.size > 0;
    const page = this.cursors.length;
    const total = this.page ? this.page.total : 0;
    info.textContent = `page ${page} · ${this.items.size} shown · ${total} ${this.status || "in all"}`;
    first.disabled = prev.disabled = page === 1;
    next.disabled = !this.page || this.page.next_cursor === null;
  }

  row(item) {
    const id = item.item_id;
    const part = item.batch_id !== null && item.batch_id !== id;
    const multi = item.kind === "multifile";
    const tr = el("tr", {
      "data-job-id": id,
      class: ["job", part ? "part" : "", multi ? "multifile" : ""].join(" ").trim(),
      hidden: part && this.collapsed.has(item.batch_id),
    });
    const toggle = multi
      ? el("button", { type: "button", class: "toggle quiet", "data-action": "toggle" })
      : null;
    const cells = {
      name: el("span", { class: "file" }),
      note: el("div", { class: "note" }),
      status: el("span", { class: "badge" }),
      bar: el("progress", { max: 1 }),
      percent: el("span", { class: "percent" }),
      bytes: el("td", { class: "bytes" }),
      rate: el("td", { class: "rate" }),
      eta: el("td", { class: "eta" }),
      priority: el("td", { class: "priority" }),
      actions: el("td", { class: "actions" }),
      toggle,
      shown: null,
    };
    tr.append(
      el("td", { class: "id", text: `#${id}` }),
      el("td", { class: "name" }, toggle, cells.name, cells.note),
      el("td", { class: "status" }, cells.status),
      el("td", { class: "progress" }, cells.bar, cells.percent),
      cells.bytes,
      cells.rate,
      cells.eta,
      cells.priority,
      cells.actions,
    );
    this.rows.set(id, { tr, cells });
    this.update(id);
    return tr;
  }

  // Bring row `id` up to its item, in place: its buttons are made again only when its status
  // changed, so a click is never lost under a progress update.
  update(id) {
    const item = this.items.get(id);
    const found = this.rows.get(id);
    if (!item || !found) return;
    const { tr, cells } = found;
    tr.dataset.status = item.status;
    cells.name.textContent = fileName(item) || `job ${id}`;
    cells.name.title = item.source || item.download_path || "";
    cells.note.textContent = this.note(item);
    cells.status.textContent = item.status;
    cells.status.className = `badge status-${item.status}`;
    const total = item.total_bytes || 0;
    if (total > 0) {
      cells.bar.max = total;
      cells.bar.value = Math.min(item.bytes, total);
      cells.percent.textContent = `${Math.floor((100 * Math.min(item.bytes, total)) / total)}%`;
    } else if (item.status === "in_progress") {
      cells.bar.removeAttribute("value"); // running, size not known yet
      cells.percent.textContent = "";
    } else {
      cells.bar.max = 1;
      cells.bar.value = item.status === "completed" ? 1 : 0;
      cells.percent.textContent = item.status === "completed" ? "100%" : "";
    }
    cells.bytes.textContent =
      total > 0 ? `${bytes(item.bytes)} / ${bytes(total)}` : bytes(item.bytes);
    this.pace(item, cells);
    cells.priority.textContent = String(item.priority);
    if (cells.toggle) {
      cells.toggle.textContent = this.collapsed.has(id) ? "▸" : "▾";
      cells.toggle.title = this.collapsed.has(id) ? "show its parts" : "hide its parts";
    }
    if (cells.shown !== item.status) {
      cells.shown = item.status;
      const buttons = (QUICK[item.status] || []).map((action) =>
        el("button", { type: "button", "data-action": action, text: LABEL[action] }),
      );
      buttons.push(
        el("button", { type: "button", class: "quiet", "data-action": "details", text: "More" }),
      );
      cells.actions.replaceChildren(...buttons);
    }
  }

  note(item) {
    const parts = [];
    if (item.batch_id !== null && item.batch_id !== item.item_id)
      parts.push(`part of #${item.batch_id}`);
    if (item.kind === "multifile") {
      const total = (item.part_ids || []).length;
      parts.push(
        item.parts_done !== undefined
          ? `${item.parts_done} of ${total} parts done`
          : `${total} parts`,
      );
    }
    if (item.status === "failed" && (item.error_message || item.error_type)) {
      parts.push(item.error_message || item.error_type);
    }
    return parts.join(" · ");
  }

  // Rate and ETA of a running job, from the rates the page measured.
  pace(item, cells) {
    const measured = RUNNING.has(item.status) ? this.rates.rate(item.item_id) : null;
    cells.rate.textContent = measured === null ? "" : rate(measured);
    const left = (item.total_bytes || 0) - item.bytes;
    cells.eta.textContent = measured > 0 && left > 0 ? duration(left / measured) : "";
  }

  // Every second: rates and ETAs move on even when no event comes.
  tick() {
    for (const [id, { cells }] of this.rows) {
      const item = this.items.get(id);
      if (item) this.pace(item, cells);
    }
  }

  item(id) {
    return this.items.get(id);
  }

  clicked(event) {
    const button = event.target.closest("button[data-action]");
    const tr = event.target.closest("tr[data-job-id]");
    if (!button || !tr) return;
    const id = Number(tr.dataset.jobId);
    const action = button.dataset.action;
    if (action === "toggle") {
      if (this.collapsed.has(id)) this.collapsed.delete(id);
      else this.collapsed.add(id);
      for (const [partId, { tr: row }] of this.rows) {
        const part = this.items.get(partId);
        if (part && part.batch_id === id && partId !== id) row.hidden = this.collapsed.has(id);
      }
      this.update(id);
    } else if (action === "details") {
      this.hooks.details(this.items.get(id));
    } else {
      this.act(action, id);
    }
  }

  // Send one job control; say what the API answered when it refuses.
  async act(action, id, priority) {
    const [method, path, body] = request(action, this.queue, id, priority);
    const what = action === "priority" ? `priority ${priority} for #${id}` : `${action} #${id}`;
    try {
      await call(method, path, body);
    } catch (error) {
      this.hooks.failed(error, what);
      return false;
    }
    this.hooks.message(`${what}: done`, false);
    this.load();
    return true;
  }
}
