import { defineConfig } from 'vite';
import preact from '@preact/preset-vite';

// The build goes into the Python package, so the server needs no Node to serve it.
export default defineConfig({
  plugins: [preact()],
  base: '/ui/',
  build: {
    outDir: '../src/labs_api/ui/static',
    emptyOutDir: true,
    assetsDir: 'assets',
    sourcemap: false,
    modulePreload: { polyfill: false },
  },
  server: { proxy: { '/v1': 'http://127.0.0.1:8000', '/ready': 'http://127.0.0.1:8000',
                     '/metrics': 'http://127.0.0.1:8000' } },
});
