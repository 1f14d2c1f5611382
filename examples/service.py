"""Two flows to serve with ``erpoz serve`` (docs/integrations/client.md):

- ``refund``: drafts a letter that a person approves before it is sent;
- ``story``: asks the model ``writer`` (erpoz.yaml) and streams its answer token by token.

    erpoz serve examples/service.py:refund examples/service.py:story
"""

from erpoz import Context, Flow, step


@step(review=True)
def draft(name: str, amount: float) -> str:
    return f"Dear {name}, we refund {amount:.2f} EUR."


@step
def send(letter: str) -> str:
    return "sent: " + letter


refund = Flow("refund", inputs={"name": str, "amount": float})
refund.add(send, letter=refund.add(draft, name=refund.input("name"), amount=refund.input("amount")))


@step
async def write(topic: str, ctx: Context) -> str:
    parts = []
    async for chunk in ctx.models.stream("writer", f"Write a short story about {topic}"):
        if chunk.result is None:  # the last chunk carries the whole result
            parts.append(chunk.text)
    return "".join(parts)


story = Flow("story", inputs={"topic": str})
story.add(write, topic=story.input("topic"))
