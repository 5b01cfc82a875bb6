// The page: asks for the key, then follows one queue live and the fleet around it.

import { call, queuePath, session, authHeaders, Unauthorized } from "./api.js";
import { draw } from "./chart.js";
import { enqueueBody } from "./enqueue.js";
import { COUNTS, QueueList, WorkerTable } from "./fleet.js";
import { bytes, el, rate } from "./format.js";
import { JobTable, STATUSES } from "./jobs.js";
import { LimitsPanel } from "./limits.js";
import { Rates, Series } from "./rates.js";
import { EventReader } from "./sse.js";

const $ = (id) => document.getElementById(id);
const PROBE = "/api/v1/queues?limit=1";

const rates = new Rates();
const series = new Series();
const state = {
  queue: null,
  status: "",
  limit: 50,
  counts: null,
  reader: null,
  timers: [],
  statusTimer: null,
};

function say(text, failed = false) {
  for (const target of [$("queue-message"), $("job-dialog").open ? $("job-message") : null]) {
    if (!target) continue;
    target.textContent = text;
    target.classList.toggle("error", failed);
  }
}

function failed(error, what) {
  if (error instanceof Unauthorized) {
    locked("The API refused the key: give it again.");
    return;
  }
  say(`${what} failed: ${error.message}`, true);
}

const table = new JobTable(
  {
    body: $("jobs").tBodies[0],
    empty: $("no-jobs"),
    info: $("page-info"),
    first: $("page-first"),
    prev: $("page-prev"),
    next: $("page-next"),
  },
  rates,
  { message: say, failed, details: showJob },
);
const queues = new QueueList($("queue-list"), $("more-queues"), {
  open: (queue) => open(queue, ""),
  failed,
});
const limits = new LimitsPanel(
  {
    fleet: $("limits-fleet"),
    body: $("limits").tBodies[0],
    form: $("limits-form"),
    host: $("limits-host"),
    connections: $("limits-connections"),
    bandwidth: $("limits-bandwidth"),
    rps: $("limits-rps"),
    message: $("limits-message"),
  },
  { failed },
);
const workers = new WorkerTable($("workers").tBodies[0], $("no-workers"), rates, series, {
  failed,
});

// -- the key ---------------------------------------------------------------------------

function locked(text) {
  stop();
  session.clear();
  $("dashboard").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = text;
  $("login-key").focus();
}

async function login(event) {
  event.preventDefault();
  session.set($("login-key").value.trim());
  try {
    await call("GET", PROBE);
  } catch (error) {
    session.clear();
    $("login-error").textContent =
      error instanceof Unauthorized
        ? "The API refused this key."
        : `The API did not answer: ${error.message}`;
    return;
  }
  $("login-key").value = "";
  unlock();
}

async function boot() {
  try {
    await call("GET", PROBE);
  } catch (error) {
    if (error instanceof Unauthorized) {
      locked(session.key === null ? "" : "The key kept in this tab was refused: give it again.");
    } else {
      locked(`The API did not answer: ${error.message}`);
    }
    return;
  }
  unlock();
}

function unlock() {
  $("login").hidden = true;
  $("dashboard").hidden = false;
  $("logout").hidden = session.key === null;
  const wanted = new URLSearchParams(location.hash.slice(1));
  queues
    .refresh()
    .then(() =>
      open(wanted.get("queue") || queues.defaultQueue || "default", wanted.get("status") || ""),
    );
  workers.refresh();
  limits.refresh();
  state.timers = [
    setInterval(() => limits.refresh(), 2000),
    setInterval(() => queues.refresh(), 5000),
    setInterval(() => workers.refresh(), 2000),
    setInterval(() => readStatus(), 2000),
    setInterval(tick, 1000),
  ];
}

function stop() {
  for (const timer of state.timers) clearInterval(timer);
  state.timers = [];
  if (state.reader) state.reader.stop();
  state.reader = null;
  connection("idle", "");
}

// -- one queue, live -------------------------------------------------------------------

// Show `queue`'s jobs in `status` ("": all), following its events.
function open(queue, status) {
  const same = queue === state.queue && state.reader !== null;
  state.queue = queue;
  state.status = STATUSES.includes(status) ? status : "";
  $("status-filter").value = state.status;
  $("queue-name").textContent = queue;
  history.replaceState(null, "", `#${new URLSearchParams({ queue, status: state.status })}`);
  queues.selected = queue;
  queues.render();
  say("");
  table.view(queue, state.status, state.limit);
  if (same) return;
  state.counts = null;
  if (state.reader) state.reader.stop();
  state.reader = new EventReader(`${queuePath(queue)}/events`, authHeaders, {
    onEvent: heard,
    onOpen: () => {
      table.load(); // what happened while the stream was away
      readStatus();
    },
    onState: connection,
    onUnauthorized: () => locked("The API refused the key: give it again."),
  }).start();
  readStatus();
}

function heard(payload) {
  if (payload.queue_id !== state.queue) return;
  const id = payload.job_id;
  const parent = payload.event.startsWith("multifile_");
  if (payload.event.endsWith("_progress")) {
    const added = rates.observe(id, payload.current_bytes, undefined, parent);
    if (!parent) series.add(added);
  } else if (payload.event === "download_complete") {
    series.add(rates.observe(id, payload.total_bytes));
  }
  if (table.apply(payload)) readStatusSoon();
}

function connection(stateName, detail) {
  const node = $("connection");
  node.dataset.state = stateName;
  node.textContent = {
    live: "live",
    connecting: "connecting…",
    reconnecting: `reconnecting: ${detail}`,
    idle: "",
  }[stateName];
}

function readStatusSoon() {
  if (state.statusTimer === null) {
    state.statusTimer = setTimeout(() => {
      state.statusTimer = null;
      readStatus();
    }, 500);
  }
}

async function readStatus() {
  const queue = state.queue;
  if (queue === null) return;
  let answer;
  try {
    answer = await call("GET", `${queuePath(queue)}/status`);
  } catch (error) {
    failed(error, "reading the queue's status");
    return;
  }
  if (queue !== state.queue) return;
  // No event says a job was queued or removed: changed counts make the page read its jobs.
  const counts = JSON.stringify(answer.queue);
  if (state.counts !== null && counts !== state.counts) table.soon();
  state.counts = counts;
  showStatus(answer.queue, answer.processor);
}

function showStatus(counts, processor) {
  const figures = COUNTS.map((name) => [name, counts[name]]);
  figures.push(["total", counts.total], ["workers", processor.workers.length]);
  $("queue-counts").replaceChildren(
    ...figures.map(([name, value]) =>
      el(
        "div",
        {},
        el("dt", { text: name }),
        el("dd", { "data-count": name, text: String(value) }),
      ),
    ),
  );
  $("queue-paused").hidden = !processor.is_paused;
  $("queue-pause").disabled = processor.is_paused;
  $("queue-resume").disabled = !processor.is_paused;
}

// -- queue controls --------------------------------------------------------------------

async function control(what, method, path, done) {
  let answer;
  try {
    answer = await call(method, `${queuePath(state.queue)}${path}`);
  } catch (error) {
    failed(error, what);
    return;
  }
  say(done(answer));
  table.load();
  readStatus();
  queues.refresh();
}

let clearArmed = null;

function clearQueue() {
  const button = $("queue-clear");
  if (clearArmed === null) {
    button.textContent = "Really clear?";
    clearArmed = setTimeout(disarm, 5000);
    return;
  }
  disarm();
  control(
    "clear",
    "DELETE",
    "/clear",
    (answer) => `cleared: ${answer.removed} unfinished jobs cancelled and removed`,
  );
}

function disarm() {
  clearTimeout(clearArmed);
  clearArmed = null;
  $("queue-clear").textContent = "Clear";
}

async function enqueue(event) {
  event.preventDefault();
  let body;
  try {
    body = enqueueBody({
      sources: $("enqueue-sources").value,
      dest: $("enqueue-dest").value,
      priority: $("enqueue-priority").value,
      sha256: $("enqueue-sha256").value,
      include: $("enqueue-include").value,
      exclude: $("enqueue-exclude").value,
    });
  } catch (error) {
    tell($("enqueue-message"), error.message, true);
    return;
  }
  tell($("enqueue-message"), "queueing…", false);
  let answer;
  try {
    answer = await call("POST", `${queuePath(state.queue)}/enqueue`, body);
  } catch (error) {
    if (error instanceof Unauthorized) return failed(error, "queueing");
    tell($("enqueue-message"), `not queued: ${error.message}`, true);
    return;
  }
  const ids = answer.items.map((item) => item.item_id);
  const first = answer.items[0];
  const text =
    first.kind === "multifile"
      ? `queued #${first.item_id}: ${ids.length - 1} files`
      : ids.length === 1
        ? `queued #${first.item_id}`
        : `queued ${ids.length} jobs: #${ids[0]} to #${ids[ids.length - 1]}`;
  tell($("enqueue-message"), text, false);
  $("enqueue-sources").value = "";
  $("enqueue-sha256").value = "";
  table.load();
  readStatus();
  queues.refresh();
}

function tell(target, text, isError) {
  target.textContent = text;
  target.classList.toggle("error", isError);
}

// -- one job's dialog ------------------------------------------------------------------

let shown = null;

function showJob(item) {
  shown = item.item_id;
  $("job-title").textContent = `#${item.item_id}`;
  const fields = [
    ["status", item.status],
    ["kind", item.kind],
    ["source", item.source],
    ["destination", item.dest],
    ["download path", item.download_path],
    [
      "bytes",
      item.total_bytes ? `${bytes(item.bytes)} of ${bytes(item.total_bytes)}` : bytes(item.bytes),
    ],
    ["priority", item.priority],
    ["attempts", item.attempts],
    ["queued", item.created_at],
    ["started", item.started_at],
    ["ended", item.completed_at],
    [
      "multi-file job",
      item.batch_id !== null && item.batch_id !== item.item_id ? `#${item.batch_id}` : null,
    ],
    ["parts", item.part_ids ? `${item.part_ids.length}` : null],
    ["revision", item.revision],
    ["error", item.error_type],
    ["message", item.error_message],
  ].filter(([, value]) => value !== null && value !== undefined && value !== "");
  $("job-fields").replaceChildren(
    ...fields.flatMap(([name, value]) => [
      el("dt", { text: name }),
      el("dd", { text: String(value) }),
    ]),
  );
  $("priority-value").value = String(item.priority);
  tell($("job-message"), "", false);
  $("job-dialog").showModal();
}

// -- every second ----------------------------------------------------------------------

function tick() {
  rates.prune();
  table.tick();
  workers.render();
  draw($("throughput-chart"), series.points());
  const sums = queues.totals();
  const running = workers.workers.reduce((sum, worker) => sum + worker.running.length, 0);
  const figures = [
    ["throughput", rate(rates.total())],
    ["seen here", bytes(series.seen)],
    ["workers", String(workers.workers.length)],
    ["downloading", String(running)],
    ...COUNTS.map((name) => [name, String(sums[name])]),
  ];
  $("totals").replaceChildren(
    ...figures.map(([name, value]) =>
      el("div", {}, el("dt", { text: name }), el("dd", { "data-total": name, text: value })),
    ),
  );
}

// -- wiring ----------------------------------------------------------------------------

for (const status of STATUSES)
  $("status-filter").append(el("option", { value: status, text: status }));
$("status-filter").addEventListener("change", (event) => open(state.queue, event.target.value));
$("page-size").addEventListener("change", (event) => {
  state.limit = Number(event.target.value);
  table.view(state.queue, state.status, state.limit);
});
$("login-form").addEventListener("submit", login);
$("logout").addEventListener("click", () => locked(""));
$("open-queue").addEventListener("submit", (event) => {
  event.preventDefault();
  open($("open-queue-name").value.trim(), "");
});
$("queue-pause").addEventListener("click", () =>
  control(
    "pause",
    "POST",
    "/processor/pause",
    () => `queue ${state.queue} paused: workers take none of its jobs`,
  ),
);
$("queue-resume").addEventListener("click", () =>
  control("resume", "POST", "/processor/resume", () => `queue ${state.queue} resumed`),
);
$("queue-prune").addEventListener("click", () =>
  control(
    "prune",
    "DELETE",
    "/prune",
    (answer) => `pruned: ${answer.removed} finished jobs removed`,
  ),
);
$("queue-clear").addEventListener("click", clearQueue);
$("enqueue").addEventListener("submit", enqueue);
$("job-close").addEventListener("click", () => $("job-dialog").close());
for (const button of $("job-dialog").querySelectorAll("button[data-action]")) {
  button.addEventListener("click", () => table.act(button.dataset.action, shown));
}
$("priority-form").addEventListener("submit", (event) => {
  event.preventDefault();
  table.act("priority", shown, Number($("priority-value").value));
});

boot();
