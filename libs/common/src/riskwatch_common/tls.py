"""The one TLS context of riskwatch's Kafka clients.

Every client (our producer and consumers, the Faust app, the processor's outbox reader)
takes its context from here, so ``KAFKA_SSL_CAFILE`` means the same thing to all of them.
"""

from __future__ import annotations

import ssl

from riskwatch_common.settings import KafkaSettings


def kafka_ssl_context(kafka: KafkaSettings) -> ssl.SSLContext | None:
    """The TLS context for ``kafka``, or None when its protocol is not TLS.

    ``KAFKA_SSL_CAFILE`` when set, the system CAs otherwise; hostname checks stay on.
    """
    if kafka.security_protocol not in ("SSL", "SASL_SSL"):
        return None
    return ssl.create_default_context(cafile=kafka.ssl_cafile)
