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
  function docHref(c) {
    var frag = "p" + c.chunk_id.slice(c.chunk_id.lastIndexOf("#") + 1);
    return "/documents/" + encodeURI(c.document_id) + "#" + frag;
  }
  function renderFinal(box, answer) {
    var text = box.querySelector("#answer-text");
    text.textContent = answer.text;
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
  }
  async function ask(form) {
    var box = document.getElementById("answer");
    box.replaceChildren(el("div", "", { id: "answer-text", "class": "answer-text" }));
    box.setAttribute("aria-busy", "true");
    var text = box.querySelector("#answer-text");
    var resp = await fetch("/api/v1/ask", {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf() },
      body: JSON.stringify({
        question: form.question.value,
        extractive: form.extractive.checked,
        stream: true
      })
    });
    if (!resp.ok || !resp.body) {
      text.textContent = "The answer could not be produced (" + resp.status + ").";
      box.removeAttribute("aria-busy");
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
        if (name === "delta") text.textContent += payload.text;
        else if (name === "answer") renderFinal(box, payload);
        else if (name === "error") text.textContent = "The answer could not be completed.";
      });
    }
    box.removeAttribute("aria-busy");
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
    }
    var again = document.getElementById("verify-again");
    if (again) again.addEventListener("click", function () { verifyAgain(again); });
  });
})();
