// The fleet's shared limits (`/api/v1/limits`): what is in force, each host's use, and a form
// that sets them for every worker and client of the Redis (they follow within 2 s).

import { call } from "./api.js";
import { el, rate } from "./format.js";

const shown = (value) => (value ? rate(value) : "unlimited");

export class LimitsPanel {
  constructor(parts, hooks) {
    this.parts = parts; // fleet, body, form, host, connections, bandwidth, rps, message
    this.hooks = hooks; // failed(error, what)
    parts.form.addEventListener("submit", (event) => this.set(event));
  }

  async refresh() {
    let answer;
    try {
      answer = await call("GET", "/api/v1/limits");
    } catch (error) {
      this.hooks.failed(error, "reading the limits");
      return;
    }
    this.render(answer);
  }

  render({ limits, usage }) {
    this.parts.fleet.textContent =
      `fleet bandwidth ${shown(limits.bandwidth)}; ` +
      `${limits.host_connections} connections per host not named`;
    const named = limits.hosts;
    const rows = usage.map((use) => {
      const own = named[use.host] || {};
      return el(
        "tr",
        { "data-host": use.host },
        el("td", { class: "host", text: use.host }),
        el("td", { class: "connections", text: String(own.connections || limits.host_connections) }),
        el("td", { class: "in-use", text: String(use.connections) }),
        el("td", { class: "waiting", text: String(use.waiting) }),
        el("td", { class: "bandwidth", text: shown(own.bandwidth) }),
        el("td", { class: "rps", text: own.requests_per_second ? String(own.requests_per_second) : "any" }),
        el("td", { class: "rate", text: use.rate ? rate(use.rate) : "" }),
        el("td", { class: "paused", text: use.paused_for ? `${use.paused_for.toFixed(1)} s` : "" }),
      );
    });
    this.parts.body.replaceChildren(...rows);
  }

  async set(event) {
    event.preventDefault();
    const { host, connections, bandwidth, rps, message } = this.parts;
    const body = {};
    if (host.value.trim()) body.host = host.value.trim();
    if (connections.value) body.connections = Number(connections.value);
    if (bandwidth.value.trim()) body.bandwidth = bandwidth.value.trim();
    if (rps.value) body.requests_per_second = Number(rps.value);
    try {
      this.render(await call("PUT", "/api/v1/limits", body));
      message.textContent = "limits set: every worker follows within 2 s";
      message.classList.remove("error");
    } catch (error) {
      message.textContent = `setting the limits failed: ${error.message}`;
      message.classList.add("error");
    }
  }
}
