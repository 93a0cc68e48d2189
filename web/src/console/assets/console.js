// eventops console: live regions and live task logs. Plain JS, no framework, no inline code
// (the pages' Content-Security-Policy allows only this file).
//
// - An element with data-live-src is refreshed from that URL (an HTML fragment rendered by the
//   server) every data-live-interval ms (1500 by default) while the page is visible; it stops
//   once a fragment carries data-live-done. A fragment's data-announce text goes to the page's
//   #live-announce status region when it changes, for screen readers.
// - A <pre data-sse-src> follows a task's log over server-sent events; the browser resumes
//   from the last byte offset (Last-Event-ID) after a reconnect.
"use strict";

(function () {
  var MAX_LOG_CHARS = 2000000;

  function toLogin(res) {
    if (res.redirected && res.url.indexOf("/ui/login") !== -1) {
      window.location.assign(res.url);
      return true;
    }
    return false;
  }

  function announce(text) {
    var a = document.getElementById("live-announce");
    if (a && text && a.textContent !== text) {
      a.textContent = text;
    }
  }

  function live(el) {
    var src = el.getAttribute("data-live-src");
    var every = parseInt(el.getAttribute("data-live-interval") || "1500", 10);
    var last = el.innerHTML;
    var timer = null;
    var stopped = el.querySelector("[data-live-done]") !== null;
    if (stopped) {
      return;
    }
    function schedule() {
      timer = window.setTimeout(tick, every);
    }
    function tick() {
      timer = null;
      if (document.hidden) {
        return; // resumed by visibilitychange
      }
      fetch(src, { credentials: "same-origin", headers: { Accept: "text/html" } })
        .then(function (res) {
          if (toLogin(res)) {
            return null;
          }
          if (!res.ok) {
            throw new Error("HTTP " + res.status);
          }
          return res.text();
        })
        .then(function (text) {
          if (text === null) {
            return;
          }
          if (text !== last) {
            // keep the focus on the same control when it is swapped out
            var focused = document.activeElement;
            var focusId = focused && el.contains(focused) ? focused.id : "";
            el.innerHTML = text;
            last = el.innerHTML;
            if (focusId) {
              var again = document.getElementById(focusId);
              if (again) {
                again.focus();
              }
            }
            var root = el.querySelector("[data-announce]");
            if (root) {
              announce(root.getAttribute("data-announce"));
            }
          }
          el.removeAttribute("aria-busy");
          if (el.querySelector("[data-live-done]")) {
            stopped = true;
            return;
          }
          schedule();
        })
        .catch(function () {
          el.setAttribute("aria-busy", "true");
          schedule();
        });
    }
    document.addEventListener("visibilitychange", function () {
      if (!document.hidden && !stopped && timer === null) {
        tick();
      }
    });
    schedule();
  }

  function follow(pre) {
    var src = pre.getAttribute("data-sse-src");
    var state = document.getElementById("log-state");
    var text = document.createTextNode("");
    pre.appendChild(text);
    var atBottom = true;
    function say(msg) {
      if (state) {
        state.textContent = msg;
      }
    }
    function append(s) {
      atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      text.appendData(s);
      if (text.length > MAX_LOG_CHARS) {
        // the page keeps the end of a huge log; the download link has it whole
        text.deleteData(0, text.length - MAX_LOG_CHARS);
      }
      if (atBottom) {
        pre.scrollTop = pre.scrollHeight;
      }
    }
    var es = new EventSource(src);
    es.onopen = function () {
      say("Following the log…");
    };
    es.onmessage = function (e) {
      append(JSON.parse(e.data));
      pre.setAttribute("data-offset", e.lastEventId);
    };
    es.addEventListener("skip", function (e) {
      var d = JSON.parse(e.data);
      append("\n[… " + (d.to - d.from) + " bytes not shown: the log grew faster than the page; download it whole below …]\n");
    });
    es.addEventListener("waiting", function (e) {
      say("Waiting for the task to start: " + JSON.parse(e.data));
    });
    es.addEventListener("fail", function (e) {
      say("The log could not be read: " + JSON.parse(e.data));
      es.close();
    });
    es.addEventListener("end", function () {
      say("The task has ended; this is its whole log.");
      pre.setAttribute("data-ended", "true");
      es.close();
    });
    es.onerror = function () {
      if (es.readyState === EventSource.CLOSED) {
        say("The log stream was closed; reload the page to follow it again.");
      } else {
        say("Reconnecting…");
      }
    };
  }

  function start() {
    var lives = document.querySelectorAll("[data-live-src]");
    for (var i = 0; i < lives.length; i++) {
      live(lives[i]);
    }
    var logs = document.querySelectorAll("pre[data-sse-src]");
    for (var j = 0; j < logs.length; j++) {
      follow(logs[j]);
    }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
