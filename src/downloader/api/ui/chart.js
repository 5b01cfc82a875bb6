// The throughput plot: an SVG polyline drawn here, no library.

import { rate } from "./format.js";
import { HISTORY } from "./rates.js";

const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 600;
const HEIGHT = 140;
const LEFT = 70;
const BOTTOM = 20;

function node(tag, attributes, text) {
  const found = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) found.setAttribute(name, value);
  if (text !== undefined) found.textContent = text;
  return found;
}

// Draw `points` ([seconds ago, bytes per second], oldest first) into `svg`.
export function draw(svg, points) {
  const peak = Math.max(0, ...points.map(([, value]) => value));
  const top = peak > 0 ? peak * 1.1 : 1;
  const x = (ago) => LEFT + ((HISTORY - ago) / HISTORY) * (WIDTH - LEFT - 10);
  const y = (value) => HEIGHT - BOTTOM - (value / top) * (HEIGHT - BOTTOM - 10);
  svg.replaceChildren(
    node("line", {
      x1: LEFT,
      y1: HEIGHT - BOTTOM,
      x2: WIDTH - 10,
      y2: HEIGHT - BOTTOM,
      class: "axis",
    }),
    node("line", { x1: LEFT, y1: 10, x2: LEFT, y2: HEIGHT - BOTTOM, class: "axis" }),
    node("text", { x: LEFT - 6, y: 16, "text-anchor": "end", class: "label" }, rate(peak)),
    node("text", { x: LEFT - 6, y: HEIGHT - BOTTOM, "text-anchor": "end", class: "label" }, "0"),
    node("text", { x: LEFT, y: HEIGHT - 4, class: "label" }, `${HISTORY / 60} min ago`),
    node("text", { x: WIDTH - 10, y: HEIGHT - 4, "text-anchor": "end", class: "label" }, "now"),
    node("polyline", {
      class: "line",
      points: points.map(([ago, value]) => `${x(ago).toFixed(1)},${y(value).toFixed(1)}`).join(" "),
    }),
  );
  svg.dataset.peak = String(Math.round(peak));
}
