// The model choice: one model from the list, or an ensemble — several models, each with a
// weight, whose stems the server averages (sent as model=a,b and ensemble_weights=1,2).

import { el } from "./dom.js";
import { apiFetch } from "./auth.js";

// What each model is, in a line (GET /api/models says whether its weights are here).
const MODEL_NOTES = {
  htdemucs: "Hybrid Transformer Demucs v4: the best all-round 4-stem model.",
  htdemucs_ft: "htdemucs fine-tuned per stem (a bag of four): a little better, four times the work.",
  htdemucs_6s: "htdemucs with six stems: adds guitar and piano (piano is weak).",
  hdemucs_mmi: "Hybrid Demucs v3 trained on extra data: good, older.",
  mdx_extra: "Demucs v2 of the MDX challenge, trained on extra data.",
  umxhq: "Open-Unmix trained on MUSDB18-HQ: light and fast, below Demucs.",
  umxl: "Open-Unmix large, trained on extra data: the best Open-Unmix.",
  umx: "Open-Unmix trained on MUSDB18 (band-limited to 16 kHz).",
  dsp: "Classical signal processing, no weights needed: always there, far below the neural models.",
};
const MAX_MEMBERS = 4; // as the API allows

const $ = (id) => document.getElementById(id);
const status = (m) => (m.available ? "weights here" : m.fetchable ? "downloaded on first use" : "not installed");

/** Fills the model select, the list of models and the ensemble's choices from /api/models. */
export async function loadModels() {
  const list = $("model-list");
  $("ensemble-on").addEventListener("change", showEnsemble);
  showEnsemble();
  try {
    const r = await apiFetch("/api/models");
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    const answer = await r.json();
    const models = answer.models || [];
    list.replaceChildren();
    for (const m of models) {
      const note = MODEL_NOTES[m.name] || `${m.family} model.`;
      const usable = m.available || m.fetchable;
      const card = m.card || {};
      const facts = [card.published_sdr && `Published SDR: ${card.published_sdr}.`, card.licence && `Weights licence: ${card.licence}.`]
        .filter(Boolean).join(" ");
      $("model").append(el("option", {
        value: m.name, disabled: !usable,
        text: `${m.name}${m.available ? "" : ` — ${status(m)}`}`, title: m.reason,
      }));
      list.append(el("li", { class: usable ? "ok" : "missing" },
        el("b", { text: m.name }), ` — ${status(m)}. ${note} Stems: ${m.stems.join(", ")}. ${facts}`,
        m.available ? "" : el("small", { text: ` ${m.reason}` })));
    }
    const usable = models.filter((m) => m.available || m.fetchable);
    offerRecipes(answer.recipes || [], new Set(usable.map((m) => m.name)));
    $("ensemble-models").replaceChildren(...usable.map(memberRow));
    const autoHelp = `Which separator runs. Usable here: ${usable.map((m) => m.name).join(", ") || "none"}; auto picks the best of them.`;
    const byName = Object.fromEntries(models.map((m) => [m.name, m]));
    const explain = () => {
      const m = byName[$("model").value];
      $("model-help").textContent = m ? `${MODEL_NOTES[m.name] || m.family} ${m.available ? "Weights here." : m.fetchable ? "Downloaded on first use (the job says so while it downloads)." : m.reason}` : autoHelp;
    };
    $("model").addEventListener("change", explain);
    explain();
  } catch (e) {
    list.replaceChildren(el("li", { text: `Could not list the models (${e.message}); auto still works.` }));
  }
}

/**
 * The recipes (a first stage, then a stem separated again) as choices of the stem select:
 * "lead and backing vocals" and the like, disabled where a chained model is not usable here.
 */
function offerRecipes(recipes, usable) {
  $("stems").querySelector("optgroup.recipes")?.remove();
  if (!recipes.length) return;
  const group = el("optgroup", { class: "recipes", label: "Separated again (a second model)" });
  for (const r of recipes) {
    const chained = r.chain.split(",").map((link) => link.split(">")[1]);
    const missing = chained.filter((m) => !usable.has(m));
    group.append(el("option", {
      value: `recipe:${r.name}`, disabled: missing.length > 0,
      text: `${r.label}${missing.length ? ` — ${missing.join(", ")} not installed` : ""}`,
      title: `${r.model}, then ${r.chain.replaceAll(">", " by ")}`,
    }));
  }
  $("stems").append(group);
}

/**
 * The form's stem fields: {stems} for all or one stem, or {stems: "all", recipe} for a recipe
 * (its chained stem's parts replace it: vocals-lead, vocals-backing …).
 */
export function stemFields() {
  const value = $("stems").value;
  if (!value.startsWith("recipe:")) return { stems: value };
  return { stems: "all", recipe: value.slice("recipe:".length) };
}

/** "vocals by mel_band_roformer_karaoke" for each chained stem of the job; "" for none. */
export function chainText(job) {
  return (job.options?.chain || []).map((c) => `${c.stem} by ${c.model}`).join(", ");
}

/** One model of the ensemble: a checkbox and its weight. */
function memberRow(m) {
  const id = `member-${m.name}`;
  const pick = el("input", { type: "checkbox", id, class: "member", value: m.name });
  const weight = el("input", {
    type: "number", class: "weight", min: "0.1", max: "100", step: "0.1", value: "1",
    "aria-label": `Weight of ${m.name}`, "data-model": m.name, disabled: true,
  });
  pick.addEventListener("change", () => { weight.disabled = !pick.checked; });
  return el("li", {},
    el("label", { for: id, class: "inline" }, pick, ` ${m.name}`),
    el("label", { class: "inline weight-label" }, "weight ", weight),
    el("small", { text: ` ${m.stems.join(", ")}` }));
}

function showEnsemble() {
  const on = $("ensemble-on").checked;
  $("ensemble-choice").hidden = !on;
  $("model").disabled = on; // the ensemble's models replace the single choice
}

/**
 * The form's model fields: {model} for one model, or {model: "a,b", ensemble_weights: "1,2"}.
 * @throws {Error} with a message for the person when the ensemble is not 2–4 models
 */
export function modelFields() {
  if (!$("ensemble-on").checked) return { model: $("model").value };
  const picked = [...document.querySelectorAll("#ensemble-models input.member:checked")];
  if (picked.length < 2 || picked.length > MAX_MEMBERS) {
    throw new Error(`Choose 2 to ${MAX_MEMBERS} models for the ensemble (${picked.length} chosen), or untick “Average several models”.`);
  }
  const weight = (name) => document.querySelector(`#ensemble-models input.weight[data-model="${name}"]`).value.trim() || "1";
  return {
    model: picked.map((p) => p.value).join(","),
    ensemble_weights: picked.map((p) => weight(p.value)).join(","),
    ensemble_method: $("ensemble-method").value,
  };
}

/** "htdemucs ×1 (33 %) + dsp ×2 (67 %)" from the job's options.members; "" for one model. */
export function membersText(job) {
  const members = job.options?.members;
  if (!members?.length) return "";
  return members.map((m) => `${m.model} ×${m.weight} (${Math.round(m.share * 100)} %)`).join(" + ");
}

/** How the ensemble's stems are combined, in words: "average" or "median". */
export function ensembleHow(job) {
  return job.options?.ensemble_method === "median_wave" ? "median" : "average";
}
