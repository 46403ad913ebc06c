#!/usr/bin/env bash
# The action's run step: inputs arrive as environment variables (never ${{ }} in a script),
# the binary writes the step outputs and the job summary itself.
set -euo pipefail

command="${INPUT_COMMAND:-run}"
case "$command" in
  run | plan | check) ;;
  prune)
    # publish prune: old images deleted as retention: says (a dry run only lists them); the
    # binary writes the job summary table.
    prune=(prune --policy "${INPUT_POLICY:-publish.yaml}")
    if [ "${INPUT_DRY_RUN:-false}" = "true" ]; then
      prune+=(--dry-run)
    fi
    exec publish "${prune[@]}"
    ;;
  rollback)
    # publish runpod rollback TEMPLATE --to TO: the template and its endpoints, moved back to
    # an earlier image of its repository whose signature verifies (a dry run only shows it).
    if [ -z "${INPUT_TEMPLATE:-}" ]; then
      echo "::error title=publish::command rollback needs input template (the template's name in the policy)"
      exit 2
    fi
    rollback=(runpod rollback "$INPUT_TEMPLATE" --to "${INPUT_TO:-previous}" --policy "${INPUT_POLICY:-publish.yaml}")
    if [ "${INPUT_DRY_RUN:-false}" = "true" ]; then
      rollback+=(--dry-run)
    fi
    if [ "${INPUT_ALLOW_UNSIGNED:-false}" = "true" ]; then
      rollback+=(--allow-unsigned)
    fi
    exec publish "${rollback[@]}"
    ;;
  *)
    echo "::error title=publish::input command must be run, plan, check, rollback or prune, not '${command}'"
    exit 2
    ;;
esac
dry_run=()
if [ "${INPUT_DRY_RUN:-false}" = "true" ] && [ "$command" = "run" ]; then
  if [ -n "${INPUT_ONLY:-}${INPUT_PLAN:-}" ]; then
    # A matrix job rehearsed: the saved plan or one entry of it, shown as it would run.
    dry_run=(--dry-run)
  else
    command=plan
  fi
fi
# (the +-expansion keeps an empty array legal under set -u in bash before 4.4, as on macOS)
args=("$command" --output json ${dry_run[@]+"${dry_run[@]}"})
if [ -n "${INPUT_PLAN:-}" ]; then
  if [ "$command" != "run" ]; then
    echo "::error title=publish::input plan applies to command run"
    exit 2
  fi
  args+=(--plan "$INPUT_PLAN")
else
  args+=(--policy "${INPUT_POLICY:-publish.yaml}")
fi
if [ -n "${INPUT_ONLY:-}" ]; then
  if [ "$command" != "run" ]; then
    echo "::error title=publish::input only applies to command run"
    exit 2
  fi
  args+=(--only "$INPUT_ONLY")
fi
if [ -n "${INPUT_PLAN_FILE:-}" ]; then
  if [ "$command" != "plan" ]; then
    echo "::error title=publish::input plan-file applies to command plan"
    exit 2
  fi
  publish "${args[@]}" > "$INPUT_PLAN_FILE"
  cat "$INPUT_PLAN_FILE"
  exit 0
fi
exec publish "${args[@]}"
