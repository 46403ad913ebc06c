#!/usr/bin/env bash
# The action's run step: inputs arrive as environment variables (never ${{ }} in a script),
# the binary writes the step outputs and the job summary itself.
set -euo pipefail

command="${INPUT_COMMAND:-run}"
case "$command" in
  run | plan | check) ;;
  *)
    echo "::error title=publish::input command must be run, plan or check, not '${command}'"
    exit 2
    ;;
esac
if [ "${INPUT_DRY_RUN:-false}" = "true" ] && [ "$command" = "run" ]; then
  command=plan
fi
args=("$command" --policy "${INPUT_POLICY:-publish.yaml}" --output json)
if [ -n "${INPUT_ONLY:-}" ]; then
  if [ "$command" != "run" ]; then
    echo "::error title=publish::input only applies to command run"
    exit 2
  fi
  args+=(--only "$INPUT_ONLY")
fi
exec publish "${args[@]}"
