// Vite build of the dashboard into dist/ (served by the orchestrator at "/"), plus the API
// reference page dist/api-docs/: public/api-docs/ (page and init script) and Swagger UI's bundle
// and stylesheet, copied from the pinned swagger-ui-dist package at build time.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { defineConfig } from 'vite';

const require = createRequire(import.meta.url);
const swaggerDir = dirname(require.resolve('swagger-ui-dist/package.json'));
const SWAGGER_FILES = {
  'swagger-ui-bundle.js': 'swagger-ui-bundle.js',
  'swagger-ui.css': 'swagger-ui.css',
  'LICENSE-swagger-ui.txt': 'LICENSE',
  'NOTICE-swagger-ui.txt': 'NOTICE',
};

/** The file's text without its source map comment (the map is not shipped). */
function swaggerFile(name) {
  return readFileSync(join(swaggerDir, name), 'utf8').replace(/\n\/[/*]# sourceMappingURL=\S+\s*(\*\/)?\s*$/, '\n');
}

function swaggerUi() {
  return {
    name: 'orch-swagger-ui',
    generateBundle() {
      for (const [out, src] of Object.entries(SWAGGER_FILES)) {
        this.emitFile({ type: 'asset', fileName: `api-docs/${out}`, source: swaggerFile(src) });
      }
    },
    configureServer(server) {
      server.middlewares.use((req, res, next) => {
        const name = (req.url ?? '').replace(/^\/api-docs\//, '').split('?')[0];
        const src = SWAGGER_FILES[name];
        if (!req.url?.startsWith('/api-docs/') || !src) return next();
        res.setHeader('Content-Type', name.endsWith('.css') ? 'text/css' : name.endsWith('.js') ? 'text/javascript' : 'text/plain');
        res.end(swaggerFile(src));
      });
    },
  };
}

// "npm run dev" proxies the API to a running orchestrator (ORCH_API_URL, default :8080).
const api = process.env.ORCH_API_URL ?? 'http://127.0.0.1:8080';

export default defineConfig({
  base: '/',
  plugins: [swaggerUi()],
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2022',
    sourcemap: false,
    // Swagger UI's bundle is large by nature; it is an asset, not part of the app's chunks.
    chunkSizeWarningLimit: 600,
  },
  server: {
    proxy: {
      '^/api/': { target: api, ws: true, changeOrigin: false },
      '/readyz': api,
    },
  },
});
