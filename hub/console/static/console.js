// gemba console: the live decision feed (server-sent events), the CSRF header on htmx requests,
// and htmx errors shown on the page. No inline script: the console's CSP allows only this file.
(function () {
  'use strict';
  function flash(text) {
    var m = document.getElementById('msg');
    if (!m) {
      m = document.createElement('p');
      m.id = 'msg';
      m.className = 'msg';
      var main = document.querySelector('main');
      main.insertBefore(m, main.firstChild);
    }
    m.textContent = text;
  }
  document.addEventListener('htmx:configRequest', function (e) {
    var t = document.body.dataset.csrf;
    if (t) { e.detail.headers['X-CSRF-Token'] = t; }
  });
  document.addEventListener('htmx:responseError', function (e) {
    flash((e.detail.xhr.status + ' ' + e.detail.xhr.responseText).trim());
  });
  function live() {
    var feed = document.querySelector('[data-live]');
    if (!feed || !window.EventSource) { return; }
    var state = document.getElementById('live-state');
    var es = new EventSource(feed.dataset.live);
    es.addEventListener('open', function () { if (state) { state.className = 'live-dot on'; } });
    es.addEventListener('error', function () { if (state) { state.className = 'live-dot off'; } });
    es.addEventListener('decision', function (e) {
      var empty = document.getElementById('empty');
      if (empty) { empty.remove(); }
      feed.insertAdjacentHTML('afterbegin', e.data);
      var row = feed.firstElementChild;
      if (row) { row.classList.add('new'); }
      while (feed.children.length > 1000) { feed.lastElementChild.remove(); }
    });
    window.addEventListener('pagehide', function () { es.close(); });
  }
  if (document.readyState === 'loading') {
    document.addEventListener('DOMContentLoaded', live);
  } else {
    live();
  }
})();
