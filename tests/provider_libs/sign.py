"""Signs a webhook body (read from stdin) with a provider's own Python library
and prints the signature header's value. Used by tests/providers_libs.rs.

    sign.py standardwebhooks SECRET MSG_ID UNIX_TS
    sign.py slack SECRET UNIX_TS
"""
import sys
from datetime import datetime, timezone


def main() -> None:
    kind, secret, *rest = sys.argv[1:]
    body = sys.stdin.buffer.read().decode("utf-8")
    if kind == "standardwebhooks":
        from standardwebhooks import Webhook

        msg_id, ts = rest
        when = datetime.fromtimestamp(int(ts), tz=timezone.utc)
        print(Webhook(secret).sign(msg_id, when, body))
    elif kind == "slack":
        from slack_sdk.signature import SignatureVerifier

        (ts,) = rest
        print(SignatureVerifier(secret).generate_signature(timestamp=ts, body=body))
    else:
        sys.exit(f"sign.py: unknown provider {kind!r}")


main()
