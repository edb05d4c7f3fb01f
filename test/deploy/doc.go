// Package deploy checks the deployment files under deploy/ (the
// docker-compose set-up in deploy/compose and ../../docker-compose.yml)
// against the real tools. It has no code of its own, only tests.
package deploy
