// A "Copy" button next to a value shown once (a new API key): <button data-copy="#id">.
// The Clipboard API needs a secure context (https, or localhost); elsewhere the text is
// selected and copied the old way, and at worst left selected for Ctrl-C.
(function () {
  "use strict";

  function copyBySelection(element) {
    const range = document.createRange();
    range.selectNodeContents(element);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    try {
      return document.execCommand("copy");
    } catch (error) {
      return false;
    }
  }

  document.addEventListener("click", async function (event) {
    const button = event.target.closest("button[data-copy]");
    if (!button) return;
    const source = document.querySelector(button.dataset.copy);
    if (!source) return;
    const text = source.textContent.trim();
    let copied = false;
    if (navigator.clipboard && window.isSecureContext) {
      try {
        await navigator.clipboard.writeText(text);
        copied = true;
      } catch (error) {
        copied = false;
      }
    }
    if (!copied) copied = copyBySelection(source);
    const status = document.getElementById(button.getAttribute("aria-describedby"));
    button.textContent = copied ? "Copied" : "Selected: press Ctrl+C";
    if (status) status.textContent = copied ? "Copied to the clipboard." : "";
  });
})();
