// @hocuspocus/server 3.4 with its defaults and no extensions (no database,
// no auth hook): documents live in memory only.
//
//   PORT=1235 node hocuspocus.js
'use strict'
const { Server } = require('@hocuspocus/server')

const port = Number(process.env.PORT || 1235)
const server = new Server({ port, address: '127.0.0.1', quiet: true })
server.listen().then(() => console.log(`hocuspocus on 127.0.0.1:${port}`))
