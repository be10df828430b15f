// The review page: one item at a time, answered with the arrow keys (no click needed) or the buttons.
// It knows only opaque ids; the server keeps which model is on which side.
"use strict";
(function () {
  var current = null;   // the item shown: {item, prompt, left, right, criteria, n, total}
  var answers = [];     // the answers given so far for the current item: overall first, then each criterion
  var busy = true;      // true while loading or sending: keys are ignored then
  var left = document.getElementById("left");
  var right = document.getElementById("right");

  function $(id) { return document.getElementById(id); }

  function showError(message) {
    $("error").textContent = message;
    $("error").hidden = false;
  }

  function question() {
    var k = answers.length;
    if (k === 0) return "Overall, which video is better?";
    return "Which video is better: " + current.criteria[k - 1] + "?";
  }

  function render(state) {
    current = state;
    answers = [];
    $("progress").textContent = state.done ? state.total + " of " + state.total : state.n + " of " + state.total;
    if (state.done) {
      $("review").hidden = true;
      $("done").hidden = false;
      document.body.dataset.item = "done";
      busy = false;
      return;
    }
    $("prompt").textContent = state.prompt;
    $("question").textContent = question();
    left.src = state.left;
    right.src = state.right;
    $("review").hidden = false;
    document.body.dataset.item = state.item;
    document.body.dataset.n = String(state.n);
    replay();
    busy = false;
  }

  // Both videos play together and loop together: when the left one ends both restart; the right one is
  // pulled back to the left one's time if they drift apart.
  function replay() {
    [left, right].forEach(function (v) { try { v.currentTime = 0; } catch (e) {} });
    [left, right].forEach(function (v) { var p = v.play(); if (p && p.catch) p.catch(function () {}); });
  }
  left.addEventListener("ended", replay);
  right.addEventListener("ended", function () { if (!left.ended && left.paused) replay(); });
  left.addEventListener("timeupdate", function () {
    if (!right.paused && Math.abs(right.currentTime - left.currentTime) > 0.15) right.currentTime = left.currentTime;
  });

  function request(method, path, body) {
    return fetch(path, {method: method, headers: {"Content-Type": "application/json"}, cache: "no-store",
                        body: body === undefined ? undefined : JSON.stringify(body)})
      .then(function (r) {
        return r.json().then(function (data) {
          if (!r.ok) throw new Error(data.error || ("HTTP " + r.status));
          return data;
        });
      });
  }

  function load() {
    busy = true;
    request("GET", "api/next").then(render).catch(function (e) { showError(e.message); });
  }

  function answer(which) {
    if (busy || !current || current.done) return;
    answers.push(which);
    if (answers.length <= current.criteria.length) {
      $("question").textContent = question();
      return;
    }
    var criteria = {};
    for (var i = 0; i < current.criteria.length; i++) criteria[String(i)] = answers[i + 1];
    busy = true;
    request("POST", "api/vote", {item: current.item, answer: answers[0], criteria: criteria})
      .then(function (data) { render(data.next); })
      .catch(function (e) { showError(e.message + " (reload the page to continue)"); });
  }

  function back() {
    if (busy || !answers.length) return;
    answers.pop();
    $("question").textContent = question();
  }

  document.addEventListener("keydown", function (event) {
    var keys = {ArrowLeft: "left", ArrowRight: "right", ArrowDown: "tie"};
    if (keys[event.key]) { event.preventDefault(); answer(keys[event.key]); }
    else if (event.key === "r" || event.key === "R") { event.preventDefault(); replay(); }
    else if (event.key === "Backspace") { event.preventDefault(); back(); }
  });
  $("vote-left").addEventListener("click", function () { answer("left"); });
  $("vote-right").addEventListener("click", function () { answer("right"); });
  $("vote-tie").addEventListener("click", function () { answer("tie"); });
  $("replay").addEventListener("click", replay);
  // focus the document so the keys work at once, without a click
  window.focus();
  load();
})();
