// sovra web UI: stream answers over Server-Sent Events (fetch + ReadableStream) and
// re-verify receipts. No innerHTML with server data: every node is built with textContent.
"use strict";
(function () {
  function csrf() {
    var m = document.querySelector('meta[name="csrf-token"]');
    return m ? m.content : "";
  }
  function el(tag, text, attrs) {
    var n = document.createElement(tag);
    if (text) n.textContent = text;
    Object.keys(attrs || {}).forEach(function (k) { n.setAttribute(k, attrs[k]); });
    return n;
  }
  // Backslash escapes the verifier put into quoted Markdown; shown as text, they are noise.
  function readable(markdown) { return markdown.replace(/\\([!-\/:-@\[-`{-~])/g, "$1"); }
  function docHref(c) {
    var frag = "p" + c.chunk_id.slice(c.chunk_id.lastIndexOf("#") + 1);
    return "/documents/" + encodeURI(c.document_id) + "#" + frag;
  }
  function renderFinal(box, answer) {
    var text = box.querySelector("#answer-text");
    text.textContent = readable(answer.text);
    if (answer.citations.length) {
      box.appendChild(el("h2", "Sources"));
      var ol = el("ol", "", { id: "citations", "class": "citations" });
      answer.citations.forEach(function (c) {
        var li = el("li", "", { value: String(c.number) });
        li.appendChild(el("a", c.title, { href: docHref(c) }));
        if (c.heading_path.length) li.appendChild(document.createTextNode(" — " + c.heading_path.join(" › ")));
        ol.appendChild(li);
      });
      box.appendChild(ol);
    }
    var p = el("p", "", { id: "provenance", "class": "provenance" });
    if (answer.ai_generated) { p.appendChild(el("strong", "AI-generated")); p.appendChild(document.createTextNode(" · ")); }
    p.appendChild(document.createTextNode(answer.generation + " · endpoint "));
    p.appendChild(el("span", answer.endpoint, { "class": "endpoint" }));
    p.appendChild(document.createTextNode((answer.model ? " (" + answer.model + ")" : "") +
      " · " + answer.hosting + ", " + answer.jurisdiction +
      (answer.flags.length ? " · flags: " + answer.flags.join(", ") : "")));
    if (answer.receipt) {
      p.appendChild(document.createTextNode(" · "));
      p.appendChild(el("a", "receipt #" + answer.receipt.index,
        { href: "/receipts/" + answer.receipt.index, "class": "receipt" }));
    }
    box.appendChild(p);
    if (answer.receipt) box.appendChild(feedbackForm(answer.receipt.index));
  }
  function feedbackForm(index) {
    // The same form the server renders: a plain POST without the script, the API with it.
    var f = el("form", "", { "class": "feedback", method: "post", action: "/feedback", "aria-label": "Rate this answer" });
    f.appendChild(el("input", "", { type: "hidden", name: "csrf_token", value: csrf() }));
    f.appendChild(el("input", "", { type: "hidden", name: "answer_index", value: String(index) }));
    f.appendChild(el("label", "Comment (optional)", { "for": "feedback-comment" }));
    f.appendChild(el("input", "", { id: "feedback-comment", name: "comment", maxlength: "2000" }));
    f.appendChild(el("button", "✓ Helpful", { type: "submit", name: "rating", value: "up", title: "Helpful" }));
    f.appendChild(el("button", "✗ Not helpful", { type: "submit", name: "rating", value: "down", title: "Not helpful" }));
    f.appendChild(el("span", "", { "class": "meta feedback-status", role: "status" }));
    return f;
  }
  async function sendFeedback(form, rating) {
    var said = form.querySelector(".feedback-status");
    var resp = await post("/api/v1/feedback", {
      answer_index: Number(form.answer_index.value), rating: rating, comment: form.comment.value
    });
    if (resp.ok) {
      said.textContent = rating === "up" ? "Thanks: marked helpful." : "Thanks: marked not helpful.";
      form.querySelectorAll("button").forEach(function (b) { b.disabled = true; });
    } else {
      said.textContent = "The feedback was not saved: " + await problem(resp) + ".";
    }
  }
  var running = null;
  function status(text, busy) {
    var s = document.getElementById("ask-status");
    if (s) s.textContent = text;
    document.getElementById("ask-cancel").hidden = !busy;
    document.getElementById("ask-submit").disabled = busy;
  }
  async function problem(resp) {
    // The API's errors are JSON with a `detail` naming the problem; show it, never silence.
    try {
      var body = await resp.json();
      if (body && body.detail) return String(body.detail);
    } catch (e) { /* not JSON */ }
    return "the server answered " + resp.status;
  }
  function showPassages(found) {
    var box = document.getElementById("passages");
    box.replaceChildren();
    if (!found.documents.length) { box.hidden = true; return; }
    box.appendChild(el("h2", "Passages found"));
    var ol = el("ol", "", { "class": "hits" });
    found.documents.forEach(function (d) {
      var li = el("li", "", { "class": "document-hit" });
      var p0 = d.passages[0];
      li.appendChild(el("a", d.title, { href: docHref({ chunk_id: p0.chunk_id, document_id: d.document_id }) }));
      li.appendChild(el("span", " " + d.source + (p0.heading_path.length ? " · " + p0.heading_path.join(" › ") : ""), { "class": "meta" }));
      var p = el("p", "", { "class": "snippet" });
      p0.highlights.forEach(function (s) {
        p.appendChild(s.marked ? el("mark", s.text) : document.createTextNode(s.text));
      });
      li.appendChild(p);
      ol.appendChild(li);
    });
    box.appendChild(ol);
    box.hidden = false;
  }
  async function post(path, body, signal) {
    return fetch(path, {
      method: "POST",
      credentials: "same-origin",
      signal: signal,
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf() },
      body: JSON.stringify(body)
    });
  }
  async function ask(form) {
    if (running) return;
    running = new AbortController();
    var signal = running.signal;
    var box = document.getElementById("answer");
    box.replaceChildren(el("div", "", { id: "answer-text", "class": "answer-text" }));
    box.setAttribute("aria-busy", "true");
    document.getElementById("passages").hidden = true;
    var text = box.querySelector("#answer-text");
    var question = form.question.value;
    var streamed = "";
    try {
      status("searching…", true);
      var found = await post("/api/v1/search", { query: question, k: 5, group_by: "document" }, signal);
      if (found.ok) showPassages(await found.json());
      status("composing…", true);
      var resp = await post("/api/v1/ask",
        { question: question, extractive: form.extractive.checked, stream: true }, signal);
      if (!resp.ok || !resp.body) {
        text.textContent = "The answer could not be produced: " + await problem(resp) + ".";
        text.className = "answer-text error";
        status("", false);
        return;
      }
      var reader = resp.body.getReader();
      var decoder = new TextDecoder();
      var buffer = "";
      for (;;) {
        var chunk = await reader.read();
        if (chunk.done) break;
        buffer += decoder.decode(chunk.value, { stream: true });
        var frames = buffer.split("\n\n");
        buffer = frames.pop();
        frames.forEach(function (frame) {
          var name = "", data = "";
          frame.split("\n").forEach(function (line) {
            if (line.indexOf("event: ") === 0) name = line.slice(7);
            else if (line.indexOf("data: ") === 0) data += line.slice(6);
          });
          if (!data) return;
          var payload = JSON.parse(data);
          if (name === "delta") { streamed += payload.text; text.textContent = readable(streamed); }
          else if (name === "answer") renderFinal(box, payload);
          else if (name === "error") {
            text.textContent = "The answer could not be completed (" + payload.detail + ").";
            text.className = "answer-text error";
          }
        });
      }
      status("", false);
    } catch (e) {
      var cancelled = e && e.name === "AbortError";
      if (cancelled) text.textContent = text.textContent ? text.textContent + " [cancelled]" : "";
      else { text.textContent = "The answer could not be produced: the connection failed."; text.className = "answer-text error"; }
      status(cancelled ? "cancelled" : "", false);
    } finally {
      box.removeAttribute("aria-busy");
      running = null;
    }
  }
  async function verifyAgain(button) {
    var out = document.getElementById("verify-result");
    var source = document.getElementById(button.getAttribute("data-receipt-source"));
    var resp = await fetch("/api/v1/audit/verify-receipt", {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf() },
      body: JSON.stringify({ receipt: JSON.parse(source.textContent) })
    });
    var result = await resp.json();
    out.textContent = result.valid
      ? "Valid: entry " + result.index + " of " + result.tree_size + ", signed by " + result.signed_by.join(", ")
      : "NOT valid: " + (result.reason || resp.status);
    out.className = result.valid ? "ok" : "error";
  }
  document.addEventListener("DOMContentLoaded", function () {
    var form = document.getElementById("ask-form");
    if (form && window.fetch && window.ReadableStream) {
      form.addEventListener("submit", function (ev) { ev.preventDefault(); ask(form); });
      document.getElementById("ask-cancel").addEventListener("click", function () {
        if (running) running.abort();
      });
    }
    var question = document.getElementById("question");
    if (question && form) {
      // Ctrl/⌘+Enter submits; plain Enter still makes a new line in the question.
      question.addEventListener("keydown", function (ev) {
        if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); form.requestSubmit(); }
      });
    }
    document.addEventListener("submit", function (ev) {
      var f = ev.target;
      if (!f.classList || !f.classList.contains("feedback") || !window.fetch) return;
      ev.preventDefault();
      var rating = ev.submitter && ev.submitter.value === "down" ? "down" : "up";
      sendFeedback(f, rating);
    });
    var again = document.getElementById("verify-again");
    if (again) again.addEventListener("click", function () { verifyAgain(again); });
  });
})();
