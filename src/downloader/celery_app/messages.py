"""Celery's Redis messages for `downloader.download`, made from a template at Redis speed.

`apply_async` builds each message through Celery (`amqp.as_task_v2`, `send_task_message`)
and kombu (`Producer.publish`, the virtual channel's `basic_publish`, the Redis transport's
`_put`): about 0.2 ms of CPU per message, most of a batch enqueue. Every message of a batch
differs from the others only in the job id, the task id, kombu's delivery tag, the priority
and the queue, so one prototype is built per queue the way those functions build it (Celery's
own `create_task_message` for the task's headers and body, kombu's `prepare_message` for the
envelope, kombu's JSON and body encoding), serialised once, and made a `str.format`
template with a field where each varying value goes. A message is then one `format` call,
put on the list kombu's `_put` would choose.

The messages stay ordinary Celery task messages (protocol 2): a stock `celery worker`
consumes them and Flower shows them; `tests/test_batch_messages.py` compares one with
`apply_async`'s field by field. What `apply_async` does besides building the message is not
done: the `before_task_publish`/`after_task_publish` signals (this project connects none)
and a `task-sent` event (off unless `task_send_sent_event`, which this project leaves off).
The `reply_to` is the app's `thread_oid` of the thread that built the template: `apply_async`
would put the sending thread's, and no reply is ever sent to either (no result is kept).
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass

from celery import Celery
from kombu.utils.json import dumps

from downloader.store.keys import Keys

_ID = "\x00id\x00"
_REPR = "\x00repr\x00"
_BODY = "\x00body\x00"
_PRIORITY = "\x00priority\x00"
_TAG = "\x00tag\x00"
_MARKS = {
    _ID: '"{id}"',
    _REPR: '"({repr},)"',
    _BODY: '"{body}"',
    _PRIORITY: "{priority}",
    _TAG: '"{tag}"',
}
"""Each mark, and the field that replaces it: JSON text, quoted where the value is a string."""
_JOB = 918273645546372819
"""A job id no real job has, marking where the id goes in the serialised body."""

MAX_TEMPLATES = 1024
"""Queues whose template is kept: a process that sends for callers' queues (the REST API)
would otherwise keep one for every queue id it was ever given."""


@dataclass(frozen=True)
class Template:
    """One queue's message, serialised, with a `str.format` field where each varying
    value goes (the JSON's own braces doubled): one C call renders a message."""

    text: str
    """The message with `{id}`, `{repr}`, `{body}`, `{priority}` and `{tag}` in it."""
    body: tuple[str, str]
    """The serialised task body before and after the job id (base64-encoded per message)."""

    def render(self, job_id: int, task_id: str, priority: int) -> str:
        """The message of one job, as kombu would have put it on its list."""
        head, tail = self.body
        return self.text.format(
            id=task_id,
            repr=job_id,
            body=base64.b64encode(f"{head}{job_id}{tail}".encode()).decode(),
            priority=priority,
            tag=delivery_tag(),
        )


class TaskMessages:
    """Messages of `downloader.download` for any queue of one app, from cached templates."""

    def __init__(self, app: Celery, keys: Keys, origin: str) -> None:
        self.app = app
        self.keys = keys
        self.origin = origin
        self._templates: dict[str, Template] = {}

    def message(self, job_id: int, queue_id: str, level: int, task_id: str) -> tuple[str, str]:
        """The Redis list and the message that send job `job_id` at broker `level`.

        Args:
            job_id: the job, the task's one argument.
            queue_id: the job's queue; its Celery queue is the message's routing key.
            level: the broker priority (0 first), as `celery_priority` maps it.
            task_id: the task id (see `dispatch.dispatch_task_id`).

        Returns:
            The list kombu's Redis transport keeps that queue's messages of that level in,
            and the message as the JSON text kombu would push there.
        """
        template = self._templates.get(queue_id)
        if template is None:
            if len(self._templates) >= MAX_TEMPLATES:
                self._templates.clear()
            template = self._templates[queue_id] = self.template(queue_id)
        return self.keys.broker_list(queue_id, level), template.render(job_id, task_id, level)

    def template(self, queue_id: str) -> Template:
        """The prototype of `queue_id`'s messages, built as Celery and kombu build one."""
        app = self.app
        routing_key = self.keys.celery_queue(queue_id)
        headers, properties, body, _ = app.amqp.create_task_message(
            _ID,
            "downloader.download",
            (_JOB,),
            {},
            reply_to=app.thread_oid,
            ignore_result=True,
            argsrepr=_REPR,
            kwargsrepr="{}",
            origin=self.origin,
        )
        # What `apply_async`'s own options add to the properties (`send_task_message`), then
        # kombu's `Producer.publish`, `prepare_message` and `_inplace_augment_message`.
        properties.update(argsrepr=_REPR, kwargsrepr="{}", origin=self.origin)
        properties["delivery_mode"] = 2
        properties.setdefault("delivery_info", {})
        properties["priority"] = _PRIORITY
        properties["body_encoding"] = "base64"
        properties["delivery_tag"] = _TAG
        properties["delivery_info"].update(exchange="", routing_key=routing_key)
        serialised = dumps(body)
        head, _, tail = serialised.partition(str(_JOB))
        text = dumps(
            {
                "body": _BODY,
                "content-encoding": "utf-8",
                "content-type": "application/json",
                "headers": headers,
                "properties": properties,
            }
        )
        return Template(_formattable(text), (head, tail))


def delivery_tag() -> str:
    """A random UUID (version 4) as kombu's `uuid()` writes a delivery tag, from the same
    16 random bytes `uuid.uuid4` reads, without building a `UUID` object per message."""
    h = os.urandom(16).hex()
    variant = "89ab"[int(h[16], 16) & 3]
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{variant}{h[17:20]}-{h[20:]}"


def _formattable(text: str) -> str:
    """`text` as a `str.format` template: its braces doubled, and every place of each field
    mark (as JSON wrote it, quoted and escaped) replaced by its field."""
    text = text.replace("{", "{{").replace("}", "}}")
    for mark, field in _MARKS.items():
        if dumps(mark) not in text:
            raise ValueError(f"the message template lost its place for {mark!r}")
        text = text.replace(dumps(mark), field)
    return text
