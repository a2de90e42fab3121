"use strict";
(function () {
  // Videos load when they come near the viewport: the page paints at once, whatever its size.
  function load(video) {
    if (video.dataset.src && !video.getAttribute("src")) {
      if (video.dataset.poster) video.poster = video.dataset.poster;
      video.preload = "auto";
      video.src = video.dataset.src;
    }
  }
  function play(video) {
    load(video);
    var started = video.play();
    if (started) started.catch(function () {});  // paused again before it started: fine
  }
  var seen = new IntersectionObserver(function (entries) {
    entries.forEach(function (entry) {
      var video = entry.target;
      if (entry.isIntersecting) {
        load(video);
        if (video.closest("figure.picked, figure.before") && !video.dataset.stopped) play(video);
      } else if (!video.paused) {
        video.pause();
      }
    });
  }, {rootMargin: "300px 0px"});
  document.querySelectorAll("video[data-src]").forEach(function (v) { seen.observe(v); });

  // Sequences: the timeline seeks to a member and follows the film.
  document.querySelectorAll(".film").forEach(function (film) {
    var video = film.querySelector("video");
    var marks = Array.prototype.slice.call(film.querySelectorAll(".timeline button"));
    marks.forEach(function (mark) {
      mark.addEventListener("click", function () {
        load(video);
        var go = function () { video.currentTime = parseFloat(mark.dataset.start); play(video); };
        if (video.readyState >= 1) go(); else video.addEventListener("loadedmetadata", go, {once: true});
      });
    });
    video.addEventListener("timeupdate", function () {
      var now = video.currentTime, on = null;
      marks.forEach(function (mark) { if (parseFloat(mark.dataset.start) <= now + 0.01) on = mark; });
      marks.forEach(function (mark) { mark.classList.toggle("on", mark === on); });
    });
  });

  // Filter by scene id.
  var filter = document.getElementById("filter");
  var cards = Array.prototype.slice.call(document.querySelectorAll("article.scene"));
  cards.forEach(function (card) { card.tabIndex = -1; });  // focusable by the keys below, not by Tab
  filter.addEventListener("input", function () {
    var words = filter.value.toLowerCase().split(/[\s,]+/).filter(Boolean);
    cards.forEach(function (card) {
      var id = card.dataset.id;
      var shown = !words.length || words.some(function (w) { return id.indexOf(w) >= 0; });
      card.classList.toggle("hidden", !shown);
    });
    if (current && current.classList.contains("hidden")) select(null);
  });

  // Keyboard: arrows move between cards, space plays/pauses, 1-8 plays a take.
  var current = null;
  function visible() { return cards.filter(function (c) { return !c.classList.contains("hidden"); }); }
  function select(card, scroll) {
    if (current) current.classList.remove("current");
    current = card;
    if (!card) return;
    card.classList.add("current");
    card.focus({preventScroll: true});
    if (scroll !== false) card.scrollIntoView({block: "center"});
    card.querySelectorAll("video").forEach(load);
  }
  function move(step) {
    var list = visible();
    if (!list.length) return;
    var at = current ? list.indexOf(current) : -1;
    var next = at < 0 ? (step > 0 ? 0 : list.length - 1) : Math.min(list.length - 1, Math.max(0, at + step));
    select(list[next]);
  }
  function active(card) {
    return card.querySelector("video[data-active]") || card.querySelector("figure.picked video");
  }
  function playTake(card, number) {
    var figure = card.querySelector('figure.take[data-take="' + number + '"]');
    if (!figure) return;
    card.querySelectorAll("video").forEach(function (v) {
      v.removeAttribute("data-active");
      if (!v.paused) { v.pause(); v.dataset.stopped = "1"; }
    });
    var video = figure.querySelector("video");
    video.dataset.active = "1";
    delete video.dataset.stopped;
    video.currentTime = 0;
    play(video);
  }
  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.target === filter) {
      if (event.key === "Escape" || event.key === "Enter" || event.key === "ArrowDown") {
        filter.blur();
        if (event.key !== "Escape") move(1);
        event.preventDefault();
      }
      return;
    }
    var key = event.key;
    if (key === "ArrowDown" || key === "ArrowRight" || key === "j") move(1);
    else if (key === "ArrowUp" || key === "ArrowLeft" || key === "k") move(-1);
    else if (key === "/") filter.focus();
    else if (key === " " && current) {
      var video = active(current);
      if (video.paused) { delete video.dataset.stopped; play(video); }
      else { video.pause(); video.dataset.stopped = "1"; }
    } else if (/^[1-8]$/.test(key) && current) playTake(current, key);
    else return;
    event.preventDefault();
  });
  cards.forEach(function (card) { card.addEventListener("click", function () { if (current !== card) select(card, false); }); });
})();
