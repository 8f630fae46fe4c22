#!/usr/bin/env bash
# Point this repository's DVC at an S3 (or S3-compatible) remote; see infra/dvc/README.md.
#
#   infra/dvc/configure-s3-remote.sh s3://BUCKET/PREFIX [--endpoint URL] [--region REGION] [--name NAME] [--local]
#
# Writes the remote to .dvc/config (shared through Git) or, with --local, to .dvc/config.local
# (ignored by Git). It never writes credentials: boto3 finds them itself (IAM role, AWS_PROFILE,
# AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY), so nothing secret can end up in a commit.
set -euo pipefail

usage() { sed -n '4p' "$0" | sed 's/^# *//' >&2; exit 2; }

[[ $# -ge 1 ]] || usage
url=$1; shift
[[ $url == s3://?* ]] || { echo "error: remote URL must start with s3://, got '$url'" >&2; exit 2; }
name=storage endpoint= region= scope=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --endpoint) endpoint=${2:?--endpoint needs a URL}; shift 2 ;;
    --region) region=${2:?--region needs a name}; shift 2 ;;
    --name) name=${2:?--name needs a name}; shift 2 ;;
    --local) scope=(--local); shift ;;
    *) echo "error: unknown option '$1'" >&2; usage ;;
  esac
done

dvc remote add "${scope[@]}" --default --force "$name" "$url"
[[ -z $endpoint ]] || dvc remote modify "${scope[@]}" "$name" endpointurl "$endpoint"
[[ -z $region ]] || dvc remote modify "${scope[@]}" "$name" region "$region"
dvc remote list "${scope[@]}"
