#!/bin/bash
# One-shot (docker-compose service kafka-init, image apache/kafka): create the event topic with
# as many partitions as the deploy job should read in parallel (see docs/cluster.md, Sizing).
# Idempotent (--if-not-exists). The broker would auto-create it too, but then with the
# broker's default partition count.
set -euo pipefail
: "${KAFKA_BOOTSTRAP:?}" "${KAFKA_TOPIC:?}" "${KAFKA_TOPIC_PARTITIONS:?}"
/opt/kafka/bin/kafka-topics.sh --bootstrap-server "$KAFKA_BOOTSTRAP" --create --if-not-exists \
  --topic "$KAFKA_TOPIC" --partitions "$KAFKA_TOPIC_PARTITIONS" --replication-factor 1
/opt/kafka/bin/kafka-topics.sh --bootstrap-server "$KAFKA_BOOTSTRAP" --describe --topic "$KAFKA_TOPIC"
