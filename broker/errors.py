"""Wire-neutral errors raised by the core; each adapter maps them to its protocol's words.

``text`` names the object in RabbitMQ's style ("no queue 'x' in vhost '/'"); AMQP prefixes it with
the reply-text name (``NOT_FOUND - ...``), STOMP puts it in an ERROR frame, MQTT in a reason string.
"""


class BrokerError(Exception):
    #: RabbitMQ's reply-text name and AMQP reply code; adapters translate further.
    name = "INTERNAL_ERROR"
    amqp_code = 541
    #: True when AMQP treats it as a connection exception rather than a channel exception.
    connection_level = False

    def __init__(self, text: str):
        super().__init__(text)
        self.text = text

    def reply_text(self) -> str:
        return f"{self.name} - {self.text}"


class NotFound(BrokerError):
    name, amqp_code = "NOT_FOUND", 404


class AccessRefused(BrokerError):
    name, amqp_code = "ACCESS_REFUSED", 403


class ResourceLocked(BrokerError):
    name, amqp_code = "RESOURCE_LOCKED", 405


class PreconditionFailed(BrokerError):
    name, amqp_code = "PRECONDITION_FAILED", 406


class NotAllowed(BrokerError):
    name, amqp_code = "NOT_ALLOWED", 530
    connection_level = True


class CommandInvalid(BrokerError):
    name, amqp_code = "COMMAND_INVALID", 503
    connection_level = True
