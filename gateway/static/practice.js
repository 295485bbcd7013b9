// The practice controls under the transport: speed (pitch kept) and pitch, live; the click on
// the analysis' beat grid, its volume, a count-in, and whether "my mix" holds the click.
// Keys: [ and ] speed -/+5 %, - and = pitch -/+1 semitone.

import { Metronome, beatGrid } from "./metronome.js";
import { SEMITONES_MAX, SPEED_MAX, SPEED_MIN } from "./player.js";
import { el } from "./dom.js";

const SPEED_STEP = 0.05;
const STYLESHEET = "/static/practice.css";

const $ = (id) => document.getElementById(id);

/** The stylesheet, linked once (the page's <head> belongs to index.html). */
function linkStyles() {
  if (document.querySelector(`link[href="${STYLESHEET}"]`)) return;
  document.head.append(el("link", { rel: "stylesheet", href: STYLESHEET }));
}

const pct = (speed) => `${Math.round(speed * 100)} %`;
const signed = (x, unit) => `${x > 0 ? "+" : x < 0 ? "−" : "±"}${Math.abs(x)} ${unit}`;

export class PracticeControls {
  /**
   * @param {import("./player.js").Player} player
   * @param {object|null} analysis the job's analysis (its beat grid drives the click), or null
   */
  constructor(player, analysis) {
    this.player = player;
    linkStyles();
    this.build();
    this.setAnalysis(analysis);
    this.onKey = (e) => this.key(e);
    document.addEventListener("keydown", this.onKey);
  }

  build() {
    const range = (label, min, max, step, value) =>
      el("input", { type: "range", min: String(min), max: String(max), step: String(step), value: String(value), "aria-label": label });
    const check = (label) => el("input", { type: "checkbox", "aria-label": label });
    this.speed = range("Speed", SPEED_MIN * 100, SPEED_MAX * 100, 1, 100);
    this.pitch = range("Pitch", -SEMITONES_MAX, SEMITONES_MAX, 1, 0);
    this.cents = range("Cents", -50, 50, 1, 0);
    this.speedOut = el("output", { class: "val" });
    this.pitchOut = el("output", { class: "val" });
    this.centsOut = el("output", { class: "val" });
    this.reset = el("button", { type: "button", class: "secondary", text: "Reset speed and pitch" });
    this.click = check("Click");
    this.volume = range("Click volume", 0, 1, 0.05, 0.5);
    this.countIn = check("Count-in");
    this.everyPass = check("Count-in every loop pass");
    this.inMix = check("Click in my mix");
    this.note = el("span", { class: "note", "aria-live": "polite" });
    this.speed.oninput = () => this.apply(this.player.setSpeed(Number(this.speed.value) / 100));
    const pitch = () => this.apply(this.player.setPitch(Number(this.pitch.value) + Number(this.cents.value) / 100));
    this.pitch.oninput = pitch;
    this.cents.oninput = pitch;
    this.reset.onclick = () => this.set(1, 0);
    this.click.onchange = () => this.metronome?.setOn(this.click.checked);
    this.volume.oninput = () => this.metronome?.setVolume(Number(this.volume.value));
    this.countIn.onchange = () => { if (this.metronome) this.metronome.countInOn = this.countIn.checked; };
    this.everyPass.onchange = () => { if (this.metronome) this.metronome.everyPass = this.everyPass.checked; };
    this.inMix.onchange = () => { if (this.metronome) this.metronome.inMix = this.inMix.checked; };
    const slider = (text, input, out) => el("label", { class: "slider" }, text, input, out);
    const inline = (input, text) => el("label", { class: "inline" }, input, ` ${text}`);
    this.clickControls = [this.click, this.volume, this.countIn, this.everyPass, this.inMix];
    $("practice").replaceChildren(
      slider("speed", this.speed, this.speedOut),
      slider("pitch", this.pitch, this.pitchOut),
      slider("cents", this.cents, this.centsOut),
      this.reset,
      inline(this.click, "click"),
      slider("vol", this.volume, el("span")),
      inline(this.countIn, "count-in"),
      inline(this.everyPass, "every loop pass"),
      inline(this.inMix, "click in my mix"),
      el("span", { class: "help" }, "Keys: ", el("kbd", { text: "[" }), "/", el("kbd", { text: "]" }), " speed −/+5 % · ",
        el("kbd", { text: "-" }), "/", el("kbd", { text: "=" }), " pitch −/+1"),
      this.note,
    );
    this.show();
  }

  /** The job's analysis arrived (a job followed while it ran): its beats make the click. */
  setAnalysis(analysis) {
    const grid = beatGrid(analysis);
    this.metronome?.dispose();
    this.metronome = grid ? new Metronome(this.player, grid) : null;
    this.player.metronome = this.metronome;
    for (const c of this.clickControls) c.disabled = !grid;
    if (this.metronome) {
      this.metronome.setOn(this.click.checked);
      this.metronome.setVolume(Number(this.volume.value));
      Object.assign(this.metronome, { countInOn: this.countIn.checked, everyPass: this.everyPass.checked, inMix: this.inMix.checked });
    }
    this.say(grid ? "" : "No beats (analysis off or not done yet): no click.");
  }

  /** Speed and whole semitones + cents, as the controls and the player take them. */
  set(speed, semitones) {
    this.speed.value = String(Math.round(speed * 100));
    this.pitch.value = String(Math.trunc(semitones));
    this.cents.value = String(Math.round((semitones - Math.trunc(semitones)) * 100));
    this.apply(this.player.setSpeed(speed).then(() => this.player.setPitch(semitones)));
  }

  /** Shows the values now, and a failure (the library missing) when the player says so. */
  apply(done) {
    this.show();
    done.then(() => this.show(), (e) => this.say(e.message));
  }

  show() {
    const p = this.player;
    this.speedOut.textContent = pct(p.speed);
    const whole = Math.trunc(p.semitones);
    this.pitchOut.textContent = signed(whole, "st");
    this.centsOut.textContent = signed(Math.round((p.semitones - whole) * 100), "ct");
  }

  say(text) {
    this.note.textContent = text;
  }

  key(e) {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const t = e.target;
    if (["INPUT", "SELECT", "TEXTAREA"].includes(t?.tagName) || t?.isContentEditable) return;
    const p = this.player;
    if (e.key === "[" || e.key === "]") {
      this.set(Math.round((p.speed + (e.key === "[" ? -SPEED_STEP : SPEED_STEP)) * 100) / 100, p.semitones);
    } else if (e.key === "-" || e.key === "=") {
      this.set(p.speed, Math.max(-SEMITONES_MAX, Math.min(SEMITONES_MAX, p.semitones + (e.key === "-" ? -1 : 1))));
    }
  }

  dispose() {
    document.removeEventListener("keydown", this.onKey);
    this.metronome?.dispose();
    this.player.metronome = null;
    $("practice").replaceChildren();
  }
}
