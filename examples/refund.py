"""docs/tools.md's example flow: a step that reads an invoice and e-mails the customer through
``ctx.tools``. Run it with the project file that names the tools and their policy:

    erpoz run examples/refund.py:flow -i invoice=1042 --config examples/tools.yaml
"""

from __future__ import annotations

from erpoz import Context, Flow, step


@step
async def reply(invoice: int, ctx: Context) -> str:
    found = await ctx.tools.call("lookup_invoice", invoice=invoice)
    if found["charged"] < 2:
        return f"Invoice {invoice} was charged once: nothing to refund."
    body = f"Invoice {invoice} was charged twice; we refund {found['total']:.2f} EUR."
    await ctx.tools.call("send_email", to="customer@example.com", body=body)
    return body


flow = Flow("refund", inputs={"invoice": int})
flow.output(flow.add(reply, invoice=flow.input("invoice")))
