/* The job dashboard's only script: times in the viewer's locale, confirmations, and live parts.
 * Elements marked data-live are re-read from the same URL every data-refresh-seconds seconds and swapped
 * in place, so the page updates without a reload; a page whose fresh copy says 0 (an ended job) stops. */
(function () {
  "use strict";
  var dateAndTime = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit"
  });
  var timeOnly = new Intl.DateTimeFormat(undefined, {hour: "2-digit", minute: "2-digit", second: "2-digit"});

  /* Today's times show as times (the date in the tooltip); other days with their date. */
  function localTimes(root) {
    var today = new Date().toDateString();
    root.querySelectorAll("time[datetime]").forEach(function (element) {
      var moment = new Date(element.getAttribute("datetime"));
      if (!isNaN(moment)) {
        element.title = dateAndTime.format(moment) + " (" + element.getAttribute("datetime") + ")";
        element.textContent = (moment.toDateString() === today ? timeOnly : dateAndTime).format(moment);
      }
    });
  }

  function confirmations(root) {
    root.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        if (!window.confirm(form.getAttribute("data-confirm"))) { event.preventDefault(); }
      });
    });
  }

  function refresh(seconds) {
    setTimeout(function () {
      fetch(window.location.href, {credentials: "same-origin", headers: {"X-Requested-With": "fetch"}})
        .then(function (response) { if (!response.ok) { throw new Error(response.status); } return response.text(); })
        .then(function (html) {
          var fresh = new DOMParser().parseFromString(html, "text/html");
          document.querySelectorAll("[data-live]").forEach(function (element) {
            var replacement = fresh.getElementById(element.id);
            if (replacement) {
              element.innerHTML = replacement.innerHTML;
              localTimes(element);
              confirmations(element);
            }
          });
          var main = fresh.querySelector("[data-refresh-seconds]");
          var next = main ? parseInt(main.getAttribute("data-refresh-seconds"), 10) : seconds;
          if (next > 0) { refresh(next); }
        })
        .catch(function () { refresh(seconds * 2); });  // the server is busy or restarting: back off
    }, seconds * 1000);
  }

  document.addEventListener("DOMContentLoaded", function () {
    localTimes(document);
    confirmations(document);
    var main = document.querySelector("[data-refresh-seconds]");
    var seconds = main ? parseInt(main.getAttribute("data-refresh-seconds"), 10) : 0;
    if (seconds > 0) { refresh(seconds); }
  });
})();
