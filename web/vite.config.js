import { defineConfig } from "vite";

// The page lives in app/; `npm run build` writes web/dist, which is
// committed and embedded in the server binary (server/build.rs).
export default defineConfig({
  root: "app",
  base: "/",
  build: {
    outDir: "../dist",
    emptyOutDir: true,
    // What is built is committed and embedded: no source maps (`npm run
    // dev` serves the sources for debugging).
    sourcemap: false,
    chunkSizeWarningLimit: 1024,
  },
  server: {
    // `npm run dev`: the page from Vite, the WebSocket from a running
    // server (cargo run --release -p gitmind-server).
    proxy: { "/v1": { target: "ws://127.0.0.1:7432", ws: true } },
  },
});
