"""The Kafka client's errors other layers classify (retry.py) or report (the CLI), re-exported
so only this room imports aiokafka. ``KafkaError`` carries ``.retriable``."""

from aiokafka.errors import KafkaConnectionError, KafkaError, MessageSizeTooLargeError

__all__ = ["KafkaConnectionError", "KafkaError", "MessageSizeTooLargeError"]
