/* Darkroom's desktop and mobile pages: the upload form (its options built from the
 * services' JSON schemas) and the live job list. Needs live.js; reads the page's
 * frontend config (the same as GET /api/v1/frontend/config) from #darkroom-config.
 */
(function () {
  "use strict";

  const D = window.Darkroom;
  const form = document.querySelector("[data-upload-form]");
  if (!D || !form) return;

  const config = JSON.parse(document.getElementById("darkroom-config").textContent);
  const features = config.features;
  const mobile = document.body.dataset.ui === "mobile";

  const STATUS_TEXT = {
    queued: "Queued",
    processing: "Processing",
    completed: "Completed",
    failed: "Failed",
    cancelled: "Cancelled",
  };
  // Options every image service shares go after the service's own, unless required.
  const OUTPUT_OPTIONS = ["format", "quality", "max_bytes"];
  const COLOUR_PATTERN = "^#[0-9a-fA-F]{6}$";

  const fileInputs = Array.from(form.querySelectorAll("[data-file-input]"));
  const chosenList = form.querySelector("[data-chosen]");
  const serviceSelect = form.querySelector("[data-service]");
  const serviceDescription = form.querySelector("[data-service-description]");
  const parameterBox = form.querySelector("[data-parameters]");
  const errorBox = form.querySelector("[data-form-error]");
  const progressBox = form.querySelector("[data-upload-progress]");
  const submitButton = form.querySelector("[data-submit]");
  const jobList = document.querySelector("[data-job-list]");
  const emptyNote = document.querySelector("[data-empty]");
  const transportLabel = document.querySelector("[data-transport-label]");
  const announcer = document.querySelector("[data-announcer]");

  const services = new Map(); // name -> the service from GET /api/v1/services
  const uploads = new Map(); // job id -> {name, file} for the jobs uploaded from this page
  const cards = new Map(); // job id -> the job's card in the list
  const previews = new WeakMap(); // File -> object URL

  // --- Small helpers -------------------------------------------------------------------

  function el(tag, attributes, ...children) {
    const node = document.createElement(tag);
    Object.entries(attributes || {}).forEach(([key, value]) => {
      if (value === null || value === undefined || value === false) return;
      if (key === "text") node.textContent = value;
      else node.setAttribute(key, value === true ? "" : String(value));
    });
    node.append(...children.filter(Boolean));
    return node;
  }

  function formatBytes(bytes) {
    if (bytes < 1024) return bytes + " B";
    if (bytes < 1024 * 1024) return (bytes / 1024).toFixed(0) + " KB";
    return (bytes / 1024 / 1024).toFixed(1) + " MB";
  }

  function formatMs(ms) {
    if (ms === null || ms === undefined) return "–";
    return ms < 1000 ? Math.round(ms) + " ms" : (ms / 1000).toFixed(1) + " s";
  }

  function previewUrl(file) {
    if (!previews.has(file)) previews.set(file, URL.createObjectURL(file));
    return previews.get(file);
  }

  /** Say `text` to screen readers; the last few messages stay, so that quick ones aren't lost. */
  function announce(text) {
    announcer.append(el("p", { text }));
    while (announcer.children.length > 3) announcer.firstElementChild.remove();
  }

  // --- The options form, from the service's JSON schema ---------------------------------

  function withoutNull(prop) {
    const choices = (prop.anyOf || []).filter((choice) => choice.type !== "null");
    return choices.length === 1 ? choices[0] : prop;
  }

  // A visitor saving data gets results within a byte budget unless they clear it.
  const PAGE_DEFAULTS = config.save_data_max_bytes ? { max_bytes: config.save_data_max_bytes } : {};

  // Where a field goes: the one operation's options, a recipe step's (each step's ids its own), or
  // the recipe's output options. Its data attribute says which list of values it belongs to.
  const SINGLE = { prefix: "param-", mark: "data-parameter" };
  const RECIPE_OUTPUT = { prefix: "output-", mark: "data-output-option" };

  function parameterField(name, prop, required, place = SINGLE) {
    const spec = withoutNull(prop);
    const id = place.prefix + name;
    const given = name in PAGE_DEFAULTS ? PAGE_DEFAULTS[name] : prop.default;
    const value = given === undefined || given === null ? "" : String(given);
    const help = prop.description ? el("small", { id: id + "-help", text: prop.description }) : null;
    const common = { id, name, required, "aria-describedby": help && id + "-help", [place.mark]: true };
    let control;
    if (spec.enum) {
      const blank = value === "" && !required ? [el("option", { value: "", text: "Default" })] : [];
      const options = spec.enum.map((option) =>
        el("option", { value: option, text: choiceLabel(prop, option), selected: String(option) === value })
      );
      control = el("select", common, ...blank, ...options);
    } else if (spec.type === "boolean") {
      control = el(
        "select",
        common,
        el("option", { value: "true", text: "Yes", selected: prop.default === true }),
        el("option", { value: "false", text: "No", selected: prop.default !== true })
      );
    } else if (spec.type === "integer" || spec.type === "number") {
      const step = spec.type === "integer" ? "1" : "any";
      const inputmode = spec.type === "integer" ? "numeric" : "decimal";
      control = el("input", { ...common, type: "number", value, min: spec.minimum, max: spec.maximum, step, inputmode });
    } else if (spec.pattern === COLOUR_PATTERN) {
      control = el("input", { ...common, type: "color", value: value || "#ffffff" });
    } else {
      const pattern = spec.pattern ? spec.pattern.replace(/^\^|\$$/g, "") : null;
      control = el("input", { ...common, type: "text", value, pattern });
    }
    const label = el("label", { for: id, text: (prop.title || name) + (required ? " (required)" : "") });
    return el("div", { class: "field" }, label, control, help);
  }

  /** A choice as a form shows it: the schema's label for it (x-enum-labels), else the value capitalised. */
  function choiceLabel(prop, value) {
    const labels = prop["x-enum-labels"] || {};
    const text = String(value);
    return labels[text] || text.charAt(0).toUpperCase() + text.slice(1);
  }

  function showParameters() {
    const service = services.get(serviceSelect.value);
    const option = serviceSelect.selectedOptions[0];
    serviceDescription.textContent = option ? option.dataset.description : "";
    const legend = parameterBox.querySelector("legend");
    if (!service) return;
    const fields = schemaFields(service.parameters, () => true, SINGLE);
    const none = el("p", { class: "hint", text: "This operation has no options." });
    parameterBox.replaceChildren(legend, ...(fields.length ? fields : [none]));
  }

  /** The fields of a schema's parameters that `wanted` keeps, the shared output options last. */
  function schemaFields(schema, wanted, place) {
    const required = new Set(schema.required || []);
    const later = (name) => OUTPUT_OPTIONS.includes(name) && !required.has(name);
    const names = Object.keys(schema.properties || {})
      .filter((name) => wanted(name, required.has(name)))
      .sort((a, b) => later(a) - later(b));
    const field = (name) => parameterField(name, schema.properties[name], required.has(name), place);
    // Knobs most people leave alone (a benchmark's threads and runs) wait behind "Advanced".
    const advanced = (name) => schema.properties[name]["x-advanced"] && !required.has(name);
    const fields = names.filter((name) => !advanced(name)).map(field);
    const extra = names.filter(advanced).map(field);
    if (extra.length) fields.push(el("details", { class: "advanced" }, el("summary", { text: "Advanced" }), ...extra));
    return fields;
  }

  function valuesOf(controls) {
    const values = {};
    controls.forEach((control) => {
      if (control.value !== "") values[control.name] = control.value;
    });
    return values;
  }

  function chosenParameters() {
    return valuesOf(form.querySelectorAll("[data-parameter]"));
  }

  // --- Recipes: steps added, removed and moved, one set of output options; or a preset --------

  const modeInputs = Array.from(form.querySelectorAll("[data-mode]"));
  const modePanels = Array.from(form.querySelectorAll("[data-mode-panel]"));
  const stepList = form.querySelector("[data-steps]");
  const noSteps = form.querySelector("[data-no-steps]");
  const stepsLeft = form.querySelector("[data-steps-left]");
  const addService = form.querySelector("[data-add-service]");
  const addButton = form.querySelector("[data-add-step]");
  const recipeOutput = form.querySelector("[data-recipe-output]");
  const presetSelect = form.querySelector("[data-preset]");
  const presetDescription = form.querySelector("[data-preset-description]");
  let recipes = { submit_url: "/api/v1/process", output_options: OUTPUT_OPTIONS, max_steps: 10, presets_url: "/api/v1/presets" };
  let stepsMade = 0; // each step's fields get ids of their own

  function chosenMode() {
    const checked = modeInputs.find((input) => input.checked);
    return checked ? checked.value : "single";
  }

  function showMode() {
    const mode = chosenMode();
    modePanels.forEach((panel) => (panel.hidden = panel.dataset.modePanel !== mode));
  }

  function titleCase(name) {
    return name.charAt(0).toUpperCase() + name.slice(1);
  }

  /** The recipe parts of the page, once the services (and their recipes object) are known. */
  function setUpRecipes(answer) {
    if (answer.recipes) recipes = answer.recipes;
    // A report is a recipe's only step, never one of several: the analyze service does that alone.
    const images = Array.from(services.values()).filter((service) => service.produces === "image");
    addService.replaceChildren(...images.map((service) => el("option", { value: service.name, text: titleCase(service.name) })));
    // The output options' schema: any image service's, which all share them.
    const sharing = images.find((service) => recipes.output_options.every((name) => name in (service.parameters.properties || {})));
    const legend = recipeOutput.querySelector("legend");
    if (sharing) {
      const fields = schemaFields(sharing.parameters, (name) => recipes.output_options.includes(name), RECIPE_OUTPUT);
      recipeOutput.replaceChildren(legend, ...fields);
    }
    showSteps();
    const modes = form.querySelector("[data-modes]");
    modes.disabled = false;
    modes.hidden = false;
    D.api
      .get(recipes.presets_url)
      .then((list) => showPresets(list.presets))
      .catch(() => (presetDescription.textContent = "Could not load the presets; reload the page to try again."));
  }

  function addStep(name) {
    const service = services.get(name);
    if (!service) return;
    stepsMade += 1;
    const place = { prefix: "step" + stepsMade + "-", mark: "data-step-parameter" };
    // A step's own parameters; the output options are the recipe's, given once (below the steps).
    const own = (param, required) => required || !OUTPUT_OPTIONS.includes(param);
    const fields = schemaFields(service.parameters, own, place);
    const button = (action, text) => el("button", { type: "button", class: "button secondary small", "data-step-action": action, text });
    const actions = el("div", { class: "step-actions" }, button("up", "↑ Up"), button("down", "↓ Down"), button("remove", "Remove"));
    const none = fields.length ? null : el("p", { class: "hint", text: "No options." });
    const step = el("li", { class: "step", "data-step": name }, el("fieldset", {}, el("legend", {}), none, ...fields, actions));
    stepList.append(step);
    showSteps();
    announce("Step " + stepList.children.length + " added: " + name);
  }

  /** Number the steps, name them in their buttons, and allow only the moves there are. */
  function showSteps() {
    const steps = Array.from(stepList.children);
    steps.forEach((step, index) => {
      const name = step.dataset.step;
      const label = "step " + (index + 1) + " (" + name + ")";
      step.querySelector("legend").textContent = "Step " + (index + 1) + ": " + titleCase(name);
      const [up, down, remove] = step.querySelectorAll("[data-step-action]");
      up.setAttribute("aria-label", "Move " + label + " up");
      down.setAttribute("aria-label", "Move " + label + " down");
      remove.setAttribute("aria-label", "Remove " + label);
      up.disabled = index === 0;
      down.disabled = index === steps.length - 1;
    });
    noSteps.hidden = steps.length > 0;
    const full = steps.length >= recipes.max_steps;
    addButton.disabled = full;
    stepsLeft.textContent = full ? "A recipe has at most " + recipes.max_steps + " steps." : "";
  }

  function onStepAction(event) {
    const button = event.target.closest("[data-step-action]");
    if (!button) return;
    const step = button.closest("[data-step]");
    const action = button.dataset.stepAction;
    if (action === "remove") {
      const next = step.nextElementSibling || step.previousElementSibling;
      step.remove();
      showSteps();
      announce("Step removed: " + step.dataset.step);
      (next ? next.querySelector("[data-step-action=remove]") : addService).focus();
      return;
    }
    if (action === "up" && step.previousElementSibling) step.previousElementSibling.before(step);
    if (action === "down" && step.nextElementSibling) step.nextElementSibling.after(step);
    showSteps();
    // Moving a step takes its focus with it; at either end, the other move button keeps it.
    const other = step.querySelector("[data-step-action=" + (action === "up" ? "down" : "up") + "]");
    (button.disabled ? other : button).focus();
    const position = Array.from(stepList.children).indexOf(step) + 1;
    announce(titleCase(step.dataset.step) + " is now step " + position);
  }

  function recipeFields() {
    const steps = Array.from(stepList.children).map((step) => ({
      service: step.dataset.step,
      parameters: valuesOf(step.querySelectorAll("[data-step-parameter]")),
    }));
    return { steps: JSON.stringify(steps), ...valuesOf(recipeOutput.querySelectorAll("[data-output-option]")) };
  }

  function showPresets(presets) {
    const options = presets.map((preset) => el("option", { value: preset.name, text: titleCase(preset.name) }));
    presetSelect.replaceChildren(...options);
    presetSelect.presets = new Map(presets.map((preset) => [preset.name, preset]));
    showPreset();
  }

  function showPreset() {
    const preset = (presetSelect.presets || new Map()).get(presetSelect.value);
    if (!preset) {
      presetDescription.textContent = "No presets are declared.";
      return;
    }
    const chain = preset.steps.map((step) => step.service).join(" → ");
    presetDescription.textContent = (preset.description ? preset.description + " " : "") + "(" + chain + ")";
  }

  /** What the form asks for: one service with its parameters, or a recipe's (or preset's) fields. */
  function chosenSubmission() {
    const mode = chosenMode();
    if (mode === "recipe") return { service: null, fields: recipeFields() };
    if (mode === "preset") return { service: null, fields: { preset: presetSelect.value } };
    return { service: serviceSelect.value, fields: chosenParameters() };
  }

  // --- Choosing files: the inputs, and the drop zone that is their label -----------------------

  function chosenFiles() {
    return fileInputs.flatMap((input) => Array.from(input.files));
  }

  function showChosen() {
    const items = chosenFiles().map((file) =>
      el(
        "li",
        {},
        features.real_time_preview ? el("img", { src: previewUrl(file), alt: "" }) : null,
        el("span", { text: file.name + " (" + formatBytes(file.size) + ")" })
      )
    );
    chosenList.replaceChildren(...items);
    submitButton.textContent = mobile ? "Process photo" : items.length > 1 ? "Process " + items.length + " images" : "Process images";
  }

  function clearChosen() {
    fileInputs.forEach((input) => (input.value = ""));
    showChosen();
  }

  fileInputs.forEach((input) =>
    input.addEventListener("change", () => {
      // One photo at a time on a phone: a new choice replaces the other input's.
      if (mobile) fileInputs.filter((other) => other !== input).forEach((other) => (other.value = ""));
      showChosen();
    })
  );

  function enableDropping(zone) {
    ["dragenter", "dragover"].forEach((type) =>
      zone.addEventListener(type, (event) => {
        event.preventDefault();
        zone.classList.add("is-dragging");
      })
    );
    ["dragleave", "drop"].forEach((type) => zone.addEventListener(type, () => zone.classList.remove("is-dragging")));
    zone.addEventListener("drop", (event) => {
      event.preventDefault();
      const images = Array.from(event.dataTransfer.files).filter((file) => file.type.startsWith("image/"));
      const transfer = new DataTransfer();
      images.forEach((file) => transfer.items.add(file));
      fileInputs[0].files = transfer.files;
      showChosen();
      announce(images.length + (images.length === 1 ? " image" : " images") + " chosen");
    });
    // A file dropped beside the zone must not navigate away from the page.
    window.addEventListener("dragover", (event) => event.preventDefault());
    window.addEventListener("drop", (event) => event.preventDefault());
  }

  // --- Uploading -----------------------------------------------------------------------

  function problemWith(files) {
    if (!files.length) return mobile ? "Take or choose a photo first." : "Choose at least one image first.";
    const mode = chosenMode();
    if (mode === "recipe" && !stepList.children.length) return "Add at least one step to the recipe first.";
    if (mode === "preset" && !presetSelect.value) return "There is no preset to choose.";
    const large = files.filter((file) => file.size > config.max_upload_bytes);
    if (large.length) {
      return large.map((file) => file.name).join(", ") + ": larger than " + formatBytes(config.max_upload_bytes) + ".";
    }
    return null;
  }

  function showError(error) {
    const fields = error.fields || [];
    const list = fields.length
      ? el("ul", {}, ...fields.map((f) => el("li", { text: (f.field ? f.field + ": " : "") + f.message })))
      : null;
    // A recipe's refusal names its step (steps[1] (sharpen): ...): that says more than a generic line.
    const namesStep = /^steps\[\d+\]/.test(error.message || "");
    const lead = fields.length && !namesStep ? "Please check the options." : error.message || String(error);
    errorBox.replaceChildren(el("p", { text: lead }), list);
    form.querySelectorAll("[data-parameter], [data-step-parameter], [data-output-option]").forEach((control) => {
      const invalid = fields.some((f) => f.field === fieldPath(control));
      if (invalid) control.setAttribute("aria-invalid", "true");
      else control.removeAttribute("aria-invalid");
    });
  }

  /** A control's field as the API names it in a refusal: `width`, or `steps[1].width` in a recipe. */
  function fieldPath(control) {
    const step = control.closest("[data-step]");
    if (!step) return control.name;
    return "steps[" + Array.from(stepList.children).indexOf(step) + "]." + control.name;
  }

  function setBusy(busy) {
    submitButton.disabled = busy;
    form.setAttribute("aria-busy", String(busy));
    progressBox.hidden = !busy;
  }

  function inGroups(files, size) {
    const groups = [];
    for (let start = 0; start < files.length; start += size) groups.push(files.slice(start, start + size));
    return groups;
  }

  /** Run `work` on every item, at most `limit` at a time. */
  async function inParallel(items, limit, work) {
    const queue = items.slice();
    const runner = async () => {
      while (queue.length) await work(queue.shift());
    };
    await Promise.all(Array.from({ length: Math.min(limit, queue.length) }, runner));
  }

  async function send(files, chosen, onProgress) {
    const data = new FormData();
    files.forEach((file) => data.append("image", file, file.name));
    Object.entries(chosen.fields).forEach(([name, value]) => data.append(name, value));
    // A recipe or preset goes to the recipes' endpoint, or to a batch in place of a service.
    let path = chosen.service ? "/api/v1/process/" + encodeURIComponent(chosen.service) : recipes.submit_url;
    if (files.length > 1) {
      path = "/api/v1/jobs/batch";
      if (chosen.service) data.append("service", chosen.service);
    }
    const answer = await D.api.upload(path, data, onProgress);
    const jobs = answer.jobs || [answer];
    jobs.forEach((job, index) => {
      uploads.set(job.job_id, { name: files[index].name, file: files[index] });
      feed.update(job);
      render(feed.jobs.get(job.job_id)); // the card may exist already, from a faster WebSocket event
    });
    return jobs;
  }

  async function submit(event) {
    event.preventDefault();
    const files = chosenFiles();
    const problem = problemWith(files);
    if (problem) {
      showError({ message: problem });
      return;
    }
    errorBox.replaceChildren();
    setBusy(true);
    const progress = progressBox.querySelector("progress");
    const total = files.reduce((sum, file) => sum + file.size, 0) || 1;
    const sent = new Map();
    const groups = inGroups(files, features.batch_processing ? config.max_batch_files : 1);
    const created = [];
    const chosen = chosenSubmission();
    try {
      await inParallel(groups, config.max_concurrent_uploads, async (group) => {
        const size = group.reduce((sum, file) => sum + file.size, 0);
        const jobs = await send(group, chosen, (fraction) => {
          sent.set(group, fraction * size);
          progress.value = Math.round((100 * Array.from(sent.values()).reduce((a, b) => a + b, 0)) / total);
        });
        created.push(...jobs);
      });
      clearChosen();
      announce(created.length === 1 ? "Uploaded; processing has started." : created.length + " images uploaded.");
      if (mobile && created.length) focusCard(created[0].job_id);
    } catch (error) {
      showError(error);
    } finally {
      setBusy(false);
    }
  }

  // --- The job list ----------------------------------------------------------------------

  function titleOf(job) {
    const upload = uploads.get(job.job_id);
    return upload ? upload.name : job.service + " " + job.job_id.slice(0, 8);
  }

  function createCard(job) {
    const card = {
      item: el("li", { class: "job", "data-job-id": job.job_id, "data-created": job.created_at }),
      title: el("h3", { tabindex: "-1" }),
      status: el("span", { class: "status" }),
      progress: el("progress", { class: "job-progress", max: "100", value: "0" }),
      preview: el("div", { class: "preview" }),
      facts: el("p", { class: "result-facts", hidden: true }),
      metrics: el("p", { class: "metrics" }),
      report: el("div", { class: "report" }),
      error: el("p", { class: "job-error" }),
      frames: el("p", { class: "job-frames", "data-frames": true }),
      actions: el("div", { class: "job-actions" }),
    };
    const head = el("div", { class: "job-head" }, card.title, el("span", { class: "job-service", text: job.service }), card.status);
    card.item.append(head, card.progress, card.error, card.frames, card.preview, card.facts, card.metrics, card.report, card.actions);
    return card;
  }

  function place(card, job) {
    // Newest first, wherever an event for an older job turns up from.
    const later = Array.from(jobList.children).find((item) => item.dataset.created < job.created_at);
    jobList.insertBefore(card.item, later || null);
  }

  function render(job, previous) {
    let card = cards.get(job.job_id);
    if (!card) {
      card = createCard(job);
      cards.set(job.job_id, card);
      place(card, job);
    }
    fill(card, job, previous);
    emptyNote.hidden = cards.size > 0;
    if (previous && previous.status !== job.status) announce(titleOf(job) + ": " + STATUS_TEXT[job.status].toLowerCase());
  }

  function fill(card, job, previous) {
    const title = titleOf(job);
    card.item.className = "job job-" + job.status;
    card.item.dataset.status = job.status;
    card.title.textContent = title;
    card.status.textContent = STATUS_TEXT[job.status];
    card.status.className = "status status-" + job.status;
    // Processing with no step reported yet (or none to report, as a resize has): a bar that shows
    // the work going on, not an empty one. Once steps come, how far; striped while it works.
    const working = job.status === "processing";
    const done = job.status === "completed" ? 1 : job.progress || 0;
    if (working && done === 0) card.progress.removeAttribute("value");
    else card.progress.value = Math.round(done * 100);
    card.progress.classList.toggle("is-working", working);
    card.progress.setAttribute("aria-label", "Progress of " + title);
    card.progress.hidden = job.status === "failed" || job.status === "cancelled";
    card.error.textContent = job.error ? job.error.message : "";
    card.error.hidden = !job.error;
    fillFrames(card, job.result && job.result.frames);
    if (!previous || previous.status !== job.status || !card.actions.hasChildNodes()) fillActions(card, job);
    if (features.real_time_preview) fillPreview(card, job, title);
    else fillResult(card, job, title);
    const image = job.result && job.result.preview_url ? job.result : null;
    card.facts.textContent = image ? resultFacts(image) : "";
    card.facts.hidden = !image;
    if (job.result && job.result.report && !card.report.hasChildNodes()) card.report.append(...reportView(job.result.report));
    if (features.advanced_metrics && D.isFinished(job) && !card.metricsRequested) showMetrics(card, job);
  }

  // An animated upload: its frames kept, or why only the first was.
  function fillFrames(card, frames) {
    card.frames.hidden = !frames;
    if (!frames) return;
    card.frames.classList.toggle("is-note", Boolean(frames.note));
    card.frames.textContent = frames.note
      ? frames.note.charAt(0).toUpperCase() + frames.note.slice(1) + " (the upload has " + frames.input + " frames)."
      : "Animated: " + frames.output + " frames.";
  }

  function fillActions(card, job) {
    const actions = [];
    if (job.status === "completed") {
      const what = job.result && job.result.report ? "Download report" : "Download";
      const label = what + ": " + titleOf(job);
      actions.push(el("a", { class: "button secondary small", href: job.download_url, download: "", "aria-label": label, text: what }));
    } else if (!D.isFinished(job)) {
      const button = el("button", { type: "button", class: "button secondary small", "aria-label": "Cancel " + titleOf(job), text: "Cancel" });
      button.addEventListener("click", () => cancel(job, button));
      actions.push(button);
    }
    card.actions.replaceChildren(...actions);
  }

  function fillPreview(card, job, title) {
    const upload = uploads.get(job.job_id);
    const isImage = Boolean(job.result && job.result.preview_url);
    if (card.preview.hasChildNodes() || !upload) {
      if (isImage && !card.after) addAfter(card, job, "After " + job.service + ": " + title, "After");
      return;
    }
    const before = el("figure", {}, el("img", { src: previewUrl(upload.file), alt: "Before: " + title }), el("figcaption", { text: "Before" }));
    card.preview.append(before);
    if (isImage) addAfter(card, job, "After " + job.service + ": " + title, "After");
  }

  // A phone shows the result alone: its preview, and what Download would fetch.
  function fillResult(card, job, title) {
    if (!job.result || !job.result.preview_url || card.after) return;
    addAfter(card, job, "Result of " + job.service + ": " + title, null);
  }

  function blurhashOf(job) {
    return job.result && job.result.placeholder ? job.result.placeholder.blurhash : null;
  }

  /** The result's preview that fills `box` on this screen: the smallest size covering it, else the largest. */
  function resultPreviewUrl(job, box) {
    const needed = Math.max(box.clientWidth, box.clientHeight) * (window.devicePixelRatio || 1);
    // Saving data: the smallest preview, whatever the screen.
    const sizes = config.bandwidth === "low" ? config.preview_sizes.slice(0, 1) : config.preview_sizes;
    const size = sizes.find((candidate) => candidate >= needed) || sizes[sizes.length - 1];
    return job.result.preview_url + "?size=" + size;
  }

  // The result's preview, sized for its box, over its BlurHash until it has loaded.
  function addAfter(card, job, alt, caption) {
    card.after = el("img", { alt });
    const frame = el("div", { class: "after" }, card.after);
    const hash = blurhashOf(job);
    if (hash) {
      const placeholder = D.placeholder(hash, job.result.width, job.result.height);
      frame.prepend(placeholder);
      card.after.addEventListener("load", () => placeholder.remove(), { once: true });
    }
    // No preview to show (the result has expired, say): the BlurHash stays, and no broken image.
    card.after.addEventListener("error", () => (card.after.hidden = true), { once: true });
    card.preview.append(el("figure", {}, frame, caption ? el("figcaption", { text: caption }) : null));
    card.after.src = resultPreviewUrl(job, frame); // once in the page, where its box has a size
  }

  /** "PNG · 4000 × 3000 px · 23.0 MB": what Download gives. */
  function resultFacts(result) {
    const name = config.format_names[result.format] || String(result.format).toUpperCase();
    return [name, result.width + " × " + result.height + " px", formatBytes(result.bytes)].join(" · ");
  }

  async function showMetrics(card, job) {
    card.metricsRequested = true;
    try {
      const facts = await D.api.get(job.result_url);
      // The result's format, size and bytes are on the line above (resultFacts).
      const parts = ["Queue wait " + formatMs(facts.queue_wait_ms), "processing " + formatMs(facts.processing_ms), "total " + formatMs(facts.total_ms)];
      card.metrics.textContent = parts.join(" · ");
    } catch (error) {
      card.metricsRequested = false; // try again with the next update
    }
  }

  function reportView(report) {
    const facts = [];
    if (report.format) facts.push(["Format", report.format]);
    if (report.width) facts.push(["Size", report.width + " × " + report.height + " px (" + report.megapixels + " MP)"]);
    if ("has_alpha" in report) facts.push(["Transparency", report.has_alpha ? "yes" : "no"]);
    if ("brightness" in report) facts.push(["Brightness", report.brightness + " of 255"]);
    if ("contrast" in report) facts.push(["Contrast", String(report.contrast)]);
    if ("sharpness" in report) facts.push(["Sharpness", report.sharpness + " (higher is crisper)"]);
    const parts = [el("dl", {}, ...facts.flatMap(([term, value]) => [el("dt", { text: term }), el("dd", { text: value })]))];
    const colours = report.dominant_colors || [];
    if (colours.length) {
      const items = colours.map((c) =>
        el("li", {}, el("span", { class: "swatch", style: "background:" + c.hex, "aria-hidden": "true" }), el("span", { text: c.hex + " " + Math.round(c.fraction * 100) + "%" }))
      );
      parts.push(el("ul", { class: "colours", "aria-label": "Main colours" }, ...items));
    }
    const luma = report.histogram && report.histogram.luma;
    if (luma && !mobile) parts.push(histogramView(luma));
    return parts;
  }

  function histogramView(bins) {
    const highest = Math.max(...bins) || 1;
    const share = (from, to) => Math.round(100 * bins.slice(from, to).reduce((a, b) => a + b, 0));
    const label = "Brightness histogram: " + share(0, 5) + "% dark, " + share(5, 11) + "% mid-tones, " + share(11, 16) + "% light";
    const bars = bins.map((value) => el("span", { style: "height:" + Math.round((100 * value) / highest) + "%" }));
    return el("div", { class: "histogram", role: "img", "aria-label": label }, ...bars);
  }

  async function cancel(job, button) {
    button.disabled = true;
    try {
      feed.update(await D.api.post(job.job_url + "/cancel"));
    } catch (error) {
      announce(titleOf(job) + ": " + error.message);
      button.disabled = false;
    }
  }

  function focusCard(jobId) {
    const card = cards.get(jobId);
    if (!card) return;
    card.title.focus();
    card.item.scrollIntoView({ block: "nearest" });
  }

  function showTransport(transport) {
    jobList.dataset.transport = transport;
    transportLabel.textContent =
      transport === "websocket" ? "Live updates on" : "Checking every " + Math.round(config.polling_interval / 1000) + " s";
  }

  // --- Start ------------------------------------------------------------------------------

  const feed = new D.JobFeed({ pollingInterval: config.polling_interval, onJob: render, onTransport: showTransport });

  form.addEventListener("submit", submit);
  serviceSelect.addEventListener("change", showParameters);
  modeInputs.forEach((input) => input.addEventListener("change", showMode));
  addButton.addEventListener("click", () => addStep(addService.value));
  stepList.addEventListener("click", onStepAction);
  presetSelect.addEventListener("change", showPreset);
  const dropzone = form.querySelector("[data-dropzone]");
  if (dropzone) enableDropping(dropzone);

  D.api
    .get("/api/v1/services")
    .then((answer) => {
      answer.services.forEach((service) => services.set(service.name, service));
      showParameters();
      setUpRecipes(answer);
    })
    .catch(() => showError({ message: "Could not load the operations' options; reload the page to try again." }));

  D.api
    .get("/api/v1/jobs?limit=" + (mobile ? 5 : 20))
    .then((page) => page.jobs.forEach((job) => feed.update(job)))
    .catch(() => null) // the feed's state fills the list anyway
    .finally(() => {
      feed.start();
      document.body.dataset.ready = "true";
    });
})();
