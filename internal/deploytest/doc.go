// Package compose holds the docker-compose setup's files (init.sh,
// tileproxy.yaml, prometheus.yml, the Grafana dashboard). It has no code;
// its tests check those files against the real tools.
package compose
