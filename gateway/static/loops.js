// Loops by the music: a dragged loop snapped to the analysis's beats or bars, and the song's
// sections as labelled bands across every timeline row, each with a button that loops it.

import { fmtTime, sectionClass, withAccidentals } from "./views.js";
import { el } from "./dom.js";

export const SNAP_MODES = [
  ["off", "off"],
  ["beats", "beats"],
  ["bars", "bars"],
];

/** The times (s, ascending) a loop snaps to: "beats" the analysis's beats_s, "bars" its
 *  downbeats_s; [] when snapping is off or the analysis has none. */
export function snapGrid(analysis, mode) {
  const track = analysis?.track || {};
  const times = mode === "beats" ? track.beats_s : mode === "bars" ? track.downbeats_s : null;
  return [...(times || [])].sort((a, b) => a - b);
}

/** The time of `grid` nearest to t; t itself on an empty grid. */
export function snapTime(t, grid) {
  if (!grid.length) return t;
  let lo = 0;
  let hi = grid.length - 1;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (grid[mid] <= t) lo = mid;
    else hi = mid;
  }
  return Math.abs(grid[lo] - t) <= Math.abs(grid[hi] - t) ? grid[lo] : grid[hi];
}

/** A region with both ends on the grid; one that snaps to a point spans the next grid step
 *  (or runs to `duration` after the last one). */
export function snapRegion(region, grid, duration) {
  if (!grid.length) return region;
  const start = snapTime(region.start, grid);
  let end = snapTime(region.end, grid);
  if (end <= start) end = grid.find((t) => t > start) ?? duration;
  return { start, end };
}

/** "B (0:32–1:04)" */
export function sectionText(s) {
  return `${withAccidentals(s.label)} (${fmtTime(s.start_s, 0)}–${fmtTime(s.end_s, 0)})`;
}

/** The sections as bands over one timeline row (they let the pointer through). */
export function sectionBands(sections, duration) {
  const bands = el("div", { class: "bands", "aria-hidden": "true" });
  for (const s of sections) {
    const band = el("span", { class: `band ${sectionClass(sections, s.label)}`, text: s.label });
    band.style.left = `${(100 * s.start_s) / duration}%`;
    band.style.width = `${(100 * Math.max(0, Math.min(duration, s.end_s) - s.start_s)) / duration}%`;
    bands.append(band);
  }
  return bands;
}

/** One button per section, "Loop section B (0:32–1:04)"; onLoop(section) when pressed. */
export function sectionButtons(sections, onLoop) {
  return sections.map((s) => {
    const b = el("button", {
      type: "button", class: `section ${sectionClass(sections, s.label)}`,
      "aria-label": `Loop section ${sectionText(s)}`, text: sectionText(s),
    });
    b.onclick = () => onLoop(s);
    return b;
  });
}
