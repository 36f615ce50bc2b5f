#!/usr/bin/env bash
# The IT-ticket triage workflow end to end on the demo site: bob files a ticket (its text tries a
# prompt injection), the workflow classifies it, drafts a cited reply from the passages it found
# and waits for approval; bob may not approve his own run; erin (it-support) approves; the ticket
# store is updated and the reply is mailed to a real SMTP server on loopback (aiosmtpd, printing
# what it receives). A second ticket the documents say nothing about gets no draft: it goes to
# it-support, and erin approves it with a reply she writes herself.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
SOVRA=("$BIN/sovra" --config "${CONFIG:-demo/sovra.toml}")
TICKET=src/sovra/flows/defaults/triage-ticket.json

"$BIN/python" -m aiosmtpd -n -l 127.0.0.1:8025 &
smtp=$!
trap 'kill $smtp 2>/dev/null || true' EXIT
sleep 1

run=$("${SOVRA[@]}" flow run triage --input "$TICKET" --as bob --json |
  "$BIN/python" -c 'import json, sys; print(json.load(sys.stdin)["id"])')
"${SOVRA[@]}" flow show "$run"
if "${SOVRA[@]}" flow approve "$run" --as bob; then
  echo "bob approved his own run: separation of duties is broken" >&2
  exit 1
fi
echo "(refused above, as it must be: the requester never approves his own run)"
"${SOVRA[@]}" flow approve "$run" --as erin --reason "reply checked"
"${SOVRA[@]}" flow show "$run"

unrelated=$(echo '{"title": "printer jams on floor 3", "body": "the printer on the third floor jams every morning", "impact": 4, "requester_email": "carol@example.org"}' |
  "${SOVRA[@]}" flow run triage --input - --as bob --json |
  "$BIN/python" -c 'import json, sys; print(json.load(sys.stdin)["id"])')
"${SOVRA[@]}" flow show "$unrelated"   # no draft: nothing relevant found
echo "Facilities will replace the printer's paper tray today." |
  "${SOVRA[@]}" flow approve "$unrelated" --as erin --text-file - --reason "written by it-support"
