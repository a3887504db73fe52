// Keyboard shortcuts of the review queue (templates/dashboard/queue.html).
//
// The shortcuts only press the page's own buttons (marked data-shortcut), so every action stays
// a plain form that htmx posts, and that still works with neither htmx nor this file.
(function () {
  "use strict";

  const EDITOR_ID = "ideal-answer";
  const HELP_ID = "queue-shortcuts";
  const ITEM_HEADING_ID = "queue-item-heading";

  function isTyping(target) {
    return (
      target instanceof HTMLElement &&
      (target.isContentEditable || target.closest("input, textarea, select") !== null)
    );
  }

  // After every swap the reviewer's focus is gone with the old content: put it where the
  // next step starts (the item's heading, or the editor when it holds an error). This runs on
  // htmx:afterSwap, in the same task as the swap: on afterSettle, tens of milliseconds later,
  // it would pull the focus back from an editor a quick "e" had already opened.
  function focusCurrentItem() {
    const target = document.querySelector("[data-queue-focus]");
    if (target) {
      target.focus();
    }
  }

  function press(shortcut) {
    const button = document.querySelector('[data-shortcut="' + shortcut + '"]');
    if (!button || button.disabled) {
      return false;
    }
    button.click();
    return true;
  }

  function editIdealAnswer() {
    const editor = document.getElementById(EDITOR_ID);
    if (!editor) {
      return false;
    }
    editor.focus();
    editor.setSelectionRange(editor.value.length, editor.value.length);
    return true;
  }

  function toggleHelp() {
    const help = document.getElementById(HELP_ID);
    if (!help) {
      return false;
    }
    help.open = !help.open;
    return true;
  }

  function onKeydown(event) {
    if (event.defaultPrevented || event.isComposing || event.repeat) {
      return;
    }
    const inEditor = event.target instanceof HTMLElement && event.target.id === EDITOR_ID;
    if (inEditor && event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      event.target.form.requestSubmit();
      return;
    }
    if (inEditor && event.key === "Escape") {
      event.preventDefault();
      document.getElementById(ITEM_HEADING_ID).focus();
      return;
    }
    if (isTyping(event.target) || event.ctrlKey || event.metaKey || event.altKey) {
      return;
    }
    const actions = {
      a: () => press("a"),
      r: () => press("r"),
      s: () => press("s"),
      e: editIdealAnswer,
      "?": toggleHelp,
    };
    const action = actions[event.key.length === 1 ? event.key.toLowerCase() : event.key];
    // preventDefault keeps the "e" out of the editor it has just focused.
    if (action && action()) {
      event.preventDefault();
    }
  }

  // The server answers a decision on an item the reviewer no longer holds with 409 and an
  // empty ideal answer with 422, each with the workspace to show: swap those in too.
  function onBeforeSwap(event) {
    const status = event.detail.xhr.status;
    if (status === 409 || status === 422) {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
    }
  }

  document.addEventListener("keydown", onKeydown);
  document.addEventListener("htmx:beforeSwap", onBeforeSwap);
  document.addEventListener("htmx:afterSwap", focusCurrentItem);
  document.addEventListener("DOMContentLoaded", focusCurrentItem);
})();
