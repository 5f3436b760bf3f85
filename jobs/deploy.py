"""Deploy job: socket or Kafka events -> per-sensor windows -> pandas UDF scores -> anomaly stores.

Usage (from the project root, after `make setup`; feed it with `nc -lk 9999` or
`sentinel simulate --stream tcp://127.0.0.1:9999`):

    SPARK_CONF_DIR=conf .venv/bin/spark-submit jobs/deploy.py --config conf/sentinel.toml \
        [--model models/pressure] [--checkpoint checkpoints/deploy] [--idle-timeout 30]

Same code and flags as `sentinel deploy`; see `--help`.
"""
import sys

from sentinel.cli import deploy, main

if __name__ == "__main__":
    sys.exit(main(["deploy", *sys.argv[1:]], {"deploy": (deploy.add_deploy_args, deploy.run_deploy,
                                                           "deploy job")}, prog="jobs/deploy.py"))
