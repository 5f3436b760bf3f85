# Thin: every target calls a script in scripts/.
.PHONY: setup demo serve test test-unit bench bench-quality bench-api bench-faults services-up services-down cluster-up cluster-down clean

setup:          ## create .venv, install pinned packages, check Java
	bash scripts/setup.sh
demo:           ## simulate, train, stream a live feed over a socket, report precision/recall
	bash scripts/demo.sh
serve:          ## the operator page over the demo's store (SERVE_STORE=URL for another), http://127.0.0.1:8000/
	bash scripts/serve.sh
test:           ## everything: unit, integration (Spark, Kafka, PostgreSQL, S3), end to end
	bash scripts/test.sh all
test-unit:      ## fast unit tests only (no Spark, no services)
	bash scripts/test.sh unit
bench:          ## throughput / latency benchmark against the baseline
	bash scripts/bench.sh throughput
bench-quality:  ## detection quality benchmark (default model, GRU, LSTM, z-score baseline)
	bash scripts/bench.sh quality
bench-api:      ## API response times (p95 of /api/sensors and a 24-hour /series) for 20 and 1,000 sensors
	bash scripts/bench.sh api
bench-faults:   ## fault injection (SIGKILLs, PostgreSQL/S3 down, Kafka restart, malformed flood, disk full) vs an uninterrupted run
	bash scripts/bench.sh faults
services-up:    ## start Kafka, PostgreSQL and the S3 server locally
	for s in kafka postgres s3; do bash scripts/services/$$s.sh start; done
services-down:
	for s in kafka postgres s3; do bash scripts/services/$$s.sh stop; done
cluster-up:     ## local Spark standalone cluster (master, 2 workers, history server)
	bash scripts/services/spark-cluster.sh start
cluster-down:
	bash scripts/services/spark-cluster.sh stop
clean:          ## remove generated data, checkpoints and models (keeps .venv and caches)
	rm -rf data checkpoints reports spark-warehouse
	find models -mindepth 1 -maxdepth 1 ! -name README.md -exec rm -rf {} +
