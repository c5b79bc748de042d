"""Create MLflow's artifact bucket in MinIO if it is missing (init container of mlflow).

Runs in the MLflow image, whose "-full" variant ships boto3. Waits for MinIO to
answer, so the pods may start in any order. Idempotent.
"""

import os
import sys
import time

import boto3
from botocore.exceptions import BotoCoreError, ClientError

BUCKET = os.environ.get("ARTIFACT_BUCKET", "mlflow")
ENDPOINT = os.environ["MLFLOW_S3_ENDPOINT_URL"]
DEADLINE = time.monotonic() + float(os.environ.get("WAIT_SECONDS", "300"))


def main() -> int:
    s3 = boto3.client("s3", endpoint_url=ENDPOINT)
    while True:
        try:
            s3.head_bucket(Bucket=BUCKET)
            print(f"bucket {BUCKET} exists at {ENDPOINT}")
            return 0
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("404", "NoSuchBucket", "NotFound"):
                s3.create_bucket(Bucket=BUCKET)
                print(f"created bucket {BUCKET} at {ENDPOINT}")
                return 0
            error = f"{code}: {exc}"
        except BotoCoreError as exc:  # MinIO not reachable yet
            error = str(exc)
        if time.monotonic() > DEADLINE:
            print(f"create_bucket: {ENDPOINT}: {error}", file=sys.stderr)
            return 1
        print(f"waiting for {ENDPOINT}: {error}", flush=True)
        time.sleep(3)


if __name__ == "__main__":
    sys.exit(main())
