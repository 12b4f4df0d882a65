// keygate web UI: small progressive enhancements (the pages work without them).
// Loaded from /ui/assets/app.js under a CSP that allows only same-origin scripts.
(function () {
  "use strict";

  // Copy buttons: <button data-copy="#selector">.
  function copyText(text, button) {
    function done(ok) {
      var label = button.getAttribute("data-label") || button.textContent;
      button.setAttribute("data-label", label);
      button.textContent = ok ? "Copied" : "Select and copy";
      setTimeout(function () { button.textContent = label; }, 2000);
    }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(function () { done(true); }, function () { done(false); });
      return;
    }
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "offscreen";
    document.body.appendChild(area);
    area.select();
    var ok = false;
    try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
    document.body.removeChild(area);
    done(ok);
  }

  document.addEventListener("click", function (ev) {
    var b = ev.target.closest ? ev.target.closest("[data-copy]") : null;
    if (!b) return;
    var el = document.querySelector(b.getAttribute("data-copy"));
    if (el) copyText(el.textContent.trim(), b);
  });

  // Hub-specific fields: show the fieldset of the chosen hub only.
  function syncHub(select) {
    var hub = select.value;
    document.querySelectorAll("fieldset.hub-fields").forEach(function (fs) {
      fs.hidden = fs.getAttribute("data-hub") !== hub;
    });
  }
  document.addEventListener("change", function (ev) {
    if (ev.target && ev.target.id === "hub") syncHub(ev.target);
  });
  document.addEventListener("DOMContentLoaded", function () {
    var hub = document.getElementById("hub");
    if (hub) syncHub(hub);
    // Forms that ask first: <form data-confirm="question">.
    document.querySelectorAll("form[data-confirm]").forEach(function (f) {
      f.addEventListener("submit", function (ev) {
        if (!window.confirm(f.getAttribute("data-confirm"))) ev.preventDefault();
      });
    });
  });
})();
