// Renders /api/v1/openapi.json with Swagger UI, offline: every file is served by the
// orchestrator. The dashboard's token (localStorage orch.token) is sent with same-origin API
// requests, the spec's and "Try it out"'s alike; no request leaves this origin.
(function () {
  'use strict';
  var token = null;
  try {
    token = window.localStorage.getItem('orch.token');
  } catch (e) {
    token = null;
  }
  function sameOrigin(url) {
    try {
      return new URL(url, window.location.href).origin === window.location.origin;
    } catch (e) {
      return false;
    }
  }
  function start() {
    if (typeof window.SwaggerUIBundle !== 'function') {
      var p = document.getElementById('api-docs-error');
      p.textContent = 'Swagger UI did not load.';
      p.hidden = false;
      return;
    }
    window.ui = window.SwaggerUIBundle({
      url: '/api/v1/openapi.json',
      dom_id: '#swagger-ui',
      deepLinking: false,
      validatorUrl: null,
      tryItOutEnabled: false,
      requestInterceptor: function (req) {
        if (token && sameOrigin(req.url)) req.headers.Authorization = 'Bearer ' + token;
        return req;
      },
    });
  }
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
