#!/usr/bin/env bash
# Single-node Apache Kafka broker (KRaft, broker+controller in one JVM), no Docker.
# Jars come from Maven Central through Maven, once, into $KAFKA_HOME_DIR/<version>/libs.
set -euo pipefail
SVC_NAME=kafka
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# 3.9.x = the kafka-clients line that Spark 4.2.0's spark-sql-kafka-0-10 is built against.
KAFKA_VERSION="${KAFKA_VERSION:-3.9.2}"
KAFKA_PORT="${KAFKA_PORT:-19092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-19093}"
KAFKA_NUM_PARTITIONS="${KAFKA_NUM_PARTITIONS:-4}"
KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m}"
KAFKA_START_TIMEOUT="${KAFKA_START_TIMEOUT:-120}"
KAFKA_HOME_DIR="${KAFKA_HOME_DIR:-$CACHE_ROOT/kafka}"

VERSION_DIR="$KAFKA_HOME_DIR/$KAFKA_VERSION"
LIBS_DIR="$VERSION_DIR/libs"
DATA_DIR="$VERSION_DIR/data"
CONF_DIR="$KAFKA_HOME_DIR/config"
LOG_DIR="$KAFKA_HOME_DIR/logs"
PID_FILE="$KAFKA_HOME_DIR/kafka.pid"
RUNNING_VERSION_FILE="$KAFKA_HOME_DIR/kafka.version"
OUT_LOG="$LOG_DIR/kafka.out"          # JVM stdout/stderr
SERVER_LOG="$LOG_DIR/server.log"      # log4j output
PROPS="$CONF_DIR/server.properties"
BOOTSTRAP="127.0.0.1:$KAFKA_PORT"

usage() {
  cat <<EOF
Usage: $(basename "$0") start|stop|status|restart|topic NAME [PARTITIONS]|fetch|--help

Single-node Apache Kafka $KAFKA_VERSION broker in KRaft mode (broker+controller), bound to 127.0.0.1.

  start               fetch jars if needed (Maven Central, once), format storage if needed,
                      start the broker and wait until it answers (list topics)
  stop                SIGTERM, wait up to 30 s, then SIGKILL
  status              running or not, bootstrap address, topics
  restart             stop then start
  topic NAME [N]      create topic NAME with N partitions (default \$KAFKA_NUM_PARTITIONS), if missing
  fetch               only download the jars into the cache

Environment (defaults):
  KAFKA_VERSION=$KAFKA_VERSION            org.apache.kafka:kafka_2.13 version from Maven Central
  KAFKA_PORT=$KAFKA_PORT                client listener PLAINTEXT://127.0.0.1:\$KAFKA_PORT
  KAFKA_CONTROLLER_PORT=$KAFKA_CONTROLLER_PORT     KRaft controller listener
  KAFKA_NUM_PARTITIONS=$KAFKA_NUM_PARTITIONS          default partitions of auto-created topics
  KAFKA_HEAP_OPTS="$KAFKA_HEAP_OPTS"
  KAFKA_START_TIMEOUT=$KAFKA_START_TIMEOUT         seconds to wait for the broker to answer
  KAFKA_HOME_DIR=$KAFKA_HOME_DIR
                      state: <version>/libs (jar cache), <version>/data (log dirs),
                      config/, logs/server.log, logs/kafka.out, kafka.pid
EOF
}

running_version() { cat "$RUNNING_VERSION_FILE" 2>/dev/null || echo "$KAFKA_VERSION"; }

log4j_major() { [[ "$KAFKA_VERSION" == 3.* ]] && echo 1 || echo 2; }

fetch() {
  if [[ -f "$LIBS_DIR/.complete" ]]; then
    return 0
  fi
  command -v mvn >/dev/null || die "mvn not found (apt-get install -y maven)"
  command -v java >/dev/null || die "java not found (apt-get install -y openjdk-17-jre-headless)"
  local t0; t0="$(now_s)"
  log "fetching org.apache.kafka:kafka_2.13:$KAFKA_VERSION and its dependencies from Maven Central (once)..."
  mkdir -p "$VERSION_DIR"
  rm -rf "$LIBS_DIR.tmp"
  # Logging binding: Kafka 3.x ships slf4j-reload4j (log4j 1 API); 4.x ships log4j2 with the
  # slf4j 1.x binding (Kafka still uses slf4j-api 1.7.x, so log4j-slf4j2-impl would not bind).
  local logging_deps
  if [[ "$(log4j_major)" == 1 ]]; then
    logging_deps='<dependency><groupId>org.slf4j</groupId><artifactId>slf4j-reload4j</artifactId><version>1.7.36</version></dependency>'
  else
    logging_deps='<dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>2.24.3</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>2.24.3</version></dependency>'
  fi
  cat >"$VERSION_DIR/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.sentinel</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>$KAFKA_VERSION</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$KAFKA_VERSION</version></dependency>
    $logging_deps
  </dependencies>
</project>
EOF
  # copy-dependencies copies the declared artifacts themselves too (kafka_2.13-<v>.jar) plus
  # compile+runtime transitive dependencies.
  if ! mvn -q -B -f "$VERSION_DIR/pom.xml" dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$LIBS_DIR.tmp" >"$VERSION_DIR/fetch.log" 2>&1; then
    tail -n 30 "$VERSION_DIR/fetch.log" >&2
    die "maven could not fetch Kafka $KAFKA_VERSION (log: $VERSION_DIR/fetch.log)"
  fi
  [[ -f "$LIBS_DIR.tmp/kafka_2.13-$KAFKA_VERSION.jar" ]] || die "kafka_2.13-$KAFKA_VERSION.jar missing after fetch"
  rm -rf "$LIBS_DIR"
  mv "$LIBS_DIR.tmp" "$LIBS_DIR"
  touch "$LIBS_DIR/.complete"
  log "fetched $(find "$LIBS_DIR" -name '*.jar' | wc -l) jars ($(du -sh "$LIBS_DIR" | cut -f1)) in $(elapsed "$t0")s -> $LIBS_DIR"
}

write_config() {
  mkdir -p "$CONF_DIR" "$LOG_DIR" "$DATA_DIR"
  cat >"$PROPS" <<EOF
# generated by scripts/services/kafka.sh -- edits are overwritten on start
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$DATA_DIR
num.partitions=$KAFKA_NUM_PARTITIONS
default.replication.factor=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
min.insync.replicas=1
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=4
log.retention.hours=24
log.segment.bytes=67108864
EOF
  if [[ "$(log4j_major)" == 1 ]]; then
    cat >"$CONF_DIR/log4j.properties" <<EOF
log4j.rootLogger=INFO, file
log4j.appender.file=org.apache.log4j.RollingFileAppender
log4j.appender.file.File=$SERVER_LOG
log4j.appender.file.MaxFileSize=20MB
log4j.appender.file.MaxBackupIndex=3
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka=INFO
log4j.logger.org.apache.kafka=INFO
EOF
  else
    cat >"$CONF_DIR/log4j2.properties" <<EOF
status = warn
appender.file.type = RollingFile
appender.file.name = file
appender.file.fileName = $SERVER_LOG
appender.file.filePattern = $SERVER_LOG.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 20MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
EOF
  fi
}

log_opts() {
  if [[ "$(log4j_major)" == 1 ]]; then
    echo "-Dlog4j.configuration=file:$CONF_DIR/log4j.properties"
  else
    echo "-Dlog4j2.configurationFile=$CONF_DIR/log4j2.properties"
  fi
}

kjava() {  # run a Kafka main class in the foreground (tools)
  # shellcheck disable=SC2046
  java -Xmx256m -XX:TieredStopAtLevel=1 $(log_opts) -Dkafka.logs.dir="$LOG_DIR" -cp "$LIBS_DIR/*" "$@"
}

format_storage() {
  if [[ -f "$DATA_DIR/meta.properties" ]]; then
    return 0
  fi
  local cluster_id
  cluster_id="$(python3 -c 'import base64,uuid;print(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))')"
  log "formatting KRaft storage in $DATA_DIR (cluster id $cluster_id)..."
  # Static quorum (controller.quorum.voters) => no --standalone / --initial-controllers needed;
  # works on 3.9 and 4.x alike.
  if ! kjava kafka.tools.StorageTool format -t "$cluster_id" -c "$PROPS" --ignore-formatted \
        >>"$LOG_DIR/format.log" 2>&1; then
    tail -n 20 "$LOG_DIR/format.log" >&2
    die "storage format failed (log: $LOG_DIR/format.log)"
  fi
}

# answers: 0 when the broker answers a metadata request.
answers() {
  local py
  if py="$(venv_python)" && "$py" -c 'import confluent_kafka' 2>/dev/null; then
    "$py" - "$BOOTSTRAP" <<'PY'
import sys
from confluent_kafka.admin import AdminClient
md = AdminClient({"bootstrap.servers": sys.argv[1]}).list_topics(timeout=3)
sys.exit(0 if md.brokers else 1)
PY
  else
    kjava org.apache.kafka.tools.TopicCommand --bootstrap-server "$BOOTSTRAP" --list >/dev/null 2>&1
  fi
}

list_topics() {
  local py
  if py="$(venv_python)" && "$py" -c 'import confluent_kafka' 2>/dev/null; then
    "$py" - "$BOOTSTRAP" <<'PY'
import sys
from confluent_kafka.admin import AdminClient
md = AdminClient({"bootstrap.servers": sys.argv[1]}).list_topics(timeout=10)
for name, t in sorted(md.topics.items()):
    if not name.startswith("__"):
        print(f"  {name} (partitions={len(t.partitions)})")
PY
  else
    kjava org.apache.kafka.tools.TopicCommand --bootstrap-server "$BOOTSTRAP" --list | sed 's/^/  /'
  fi
}

start() {
  if pid_alive "$PID_FILE"; then
    log "already running (pid $(<"$PID_FILE"), version $(running_version)), bootstrap.servers=$BOOTSTRAP"
    if [[ "$(running_version)" != "$KAFKA_VERSION" ]]; then
      log "note: KAFKA_VERSION=$KAFKA_VERSION requested; run '$0 stop' first to switch versions"
    fi
    return 0
  fi
  local t0; t0="$(now_s)"
  require_free_port "$KAFKA_PORT" KAFKA_PORT
  require_free_port "$KAFKA_CONTROLLER_PORT" KAFKA_CONTROLLER_PORT
  fetch
  write_config
  format_storage
  mkdir -p "$LOG_DIR"; echo "===== $(date -Is) starting Kafka $KAFKA_VERSION" >>"$SERVER_LOG"
  log "starting Kafka $KAFKA_VERSION on $BOOTSTRAP (controller 127.0.0.1:$KAFKA_CONTROLLER_PORT)..."
  # shellcheck disable=SC2046,SC2086
  start_daemon "$PID_FILE" "$OUT_LOG" java -server $KAFKA_HEAP_OPTS -XX:+UseG1GC \
    -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true -Djava.net.preferIPv4Stack=true \
    $(log_opts) -Dkafka.logs.dir="$LOG_DIR" -cp "$LIBS_DIR/*" kafka.Kafka "$PROPS"
  wait_for "$KAFKA_START_TIMEOUT" "$PID_FILE" "$SERVER_LOG|$OUT_LOG" "Kafka to answer on $BOOTSTRAP" answers
  echo "$KAFKA_VERSION" >"$RUNNING_VERSION_FILE"
  log "Kafka is up (pid $(<"$PID_FILE")) in $(elapsed "$t0")s: bootstrap.servers=$BOOTSTRAP"
  log "logs: $SERVER_LOG"
}

stop() { stop_pidfile "$PID_FILE" "Kafka" 30; rm -f "$RUNNING_VERSION_FILE"; }

status() {
  if pid_alive "$PID_FILE"; then
    echo "kafka: running (pid $(<"$PID_FILE")), version $(running_version), bootstrap.servers=$BOOTSTRAP"
    if answers >/dev/null 2>&1; then
      echo "topics:"; list_topics || true
    else
      echo "kafka: process is up but does not answer yet (log: $SERVER_LOG)"; return 1
    fi
  else
    echo "kafka: stopped (state dir $KAFKA_HOME_DIR)"; return 3
  fi
}

create_topic() {
  local name="${1:?topic NAME [PARTITIONS]}" parts="${2:-$KAFKA_NUM_PARTITIONS}"
  pid_alive "$PID_FILE" || die "Kafka is not running (run: $0 start)"
  local py
  if py="$(venv_python)" && "$py" -c 'import confluent_kafka' 2>/dev/null; then
    "$py" - "$BOOTSTRAP" "$name" "$parts" <<'PY'
import sys
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic
bootstrap, name, parts = sys.argv[1], sys.argv[2], int(sys.argv[3])
admin = AdminClient({"bootstrap.servers": bootstrap})
if name in admin.list_topics(timeout=10).topics:
    print(f"[kafka] topic {name} already exists", file=sys.stderr); sys.exit(0)
try:
    admin.create_topics([NewTopic(name, num_partitions=parts, replication_factor=1)])[name].result(30)
    print(f"[kafka] created topic {name} ({parts} partitions)", file=sys.stderr)
except KafkaException as e:
    if e.args[0].code() == e.args[0].TOPIC_ALREADY_EXISTS:
        print(f"[kafka] topic {name} already exists", file=sys.stderr)
    else:
        raise
PY
  else
    kjava org.apache.kafka.tools.TopicCommand --bootstrap-server "$BOOTSTRAP" --create --if-not-exists \
      --topic "$name" --partitions "$parts" --replication-factor 1
    log "topic $name ready ($parts partitions)"
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  restart) stop; start ;;
  topic) shift; create_topic "$@" ;;
  fetch) fetch ;;
  -h|--help|help) usage ;;
  *) usage >&2; exit 2 ;;
esac
