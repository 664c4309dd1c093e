"""Files shared in the conversation: never fetched by default; with SEND_FILES=on, fetched from Slack with the
bot token and sent inside the Messages request as image and document blocks, within the limits."""

from __future__ import annotations

import base64
import logging
import time

import pytest
from slack_sdk.web.async_client import AsyncWebClient

from bot.config import OutboundSettings
from bot.pipeline.ask import Ask, BotIdentity, FileRef, InConversation, Origin, SlackMessage
from bot.pipeline.files import Attached, Files, fetch_files
from bot.pipeline.prompt import build_prompt
from tests.conftest import ALICE, BOB, BOT_USER, CHANNEL, DM, direct_message, mention, said
from tests.fakes.slack_api import FakeSlack

ANSWER = "Hello from fake Claude."
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(range(256)) * 4
PDF = (
    b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n"
    b"2 0 obj << /Type /Pages /Kids [3 0 R] /Count 1 >> endobj\n"
    b"3 0 obj << /Type /Page /Parent 2 0 R >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
)
CODE = "def add(a, b):\n    return a + b\n"
QUESTION = f"<@{BOT_USER}> what is in these?"
BOT = BotIdentity(user_id=BOT_USER, bot_id="B0BOT")


def files_on(**settings: str):
    """Run the test with the bot's SEND_FILES on (and any other settings given)."""
    return pytest.mark.parametrize("bot_overrides", [{"SEND_FILES": "on", **settings}], indirect=True)


def with_files(message: dict, *files: dict) -> dict:
    return {**message, "files": list(files), "upload": True}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def image_block(data: bytes) -> dict:
    return {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": b64(data)}}


async def ask_in_thread(bot, *earlier: dict, invoking_files: tuple[dict, ...] = ()) -> dict:
    """Earlier messages in a thread, then Alice's mention (with `invoking_files`); Claude's request body."""
    ts = f"100.{len(earlier) + 1:06d}"
    bot.slack.add_thread(CHANNEL, [*earlier, with_files(said(ALICE, QUESTION, ts), *invoking_files)])
    await bot.send_event(mention(QUESTION, ts=ts, thread_ts="100.000000"))
    await bot.finished()
    assert bot.replies(CHANNEL, "100.000000") == [ANSWER]
    [request] = bot.claude.requests
    return request.body


def errors_logged(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]


def a_thread(slack: FakeSlack) -> tuple[list[dict], tuple[dict, ...]]:
    """Bob shares a photo with words, then a PDF alone; Alice's question carries a code file."""
    photo = slack.add_file(PNG, "image/png", "whiteboard.png", user=BOB)
    report = slack.add_file(PDF, "application/pdf", "report.pdf", user=BOB)
    code = slack.add_file(CODE.encode(), "text/x-python", "add.py")
    earlier = [
        with_files(said(BOB, "The whiteboard from today.", "100.000000"), photo),
        with_files(said(BOB, "", "100.000001"), report),
    ]
    return earlier, (code,)


async def test_by_default_files_are_neither_downloaded_nor_sent(bot, caplog):
    earlier, code = a_thread(bot.slack)

    body = await ask_in_thread(bot, *earlier, invoking_files=code)

    assert not bot.slack.calls_to("url_private")
    # A message with only a file is left out, as a message with no words always was.
    assert body["messages"] == [
        {"role": "user", "content": "Bob Builder: The whiteboard from today.\n\nAlice: what is in these?"}
    ]
    for trace in ("whiteboard.png", "report.pdf", "add.py", b64(PNG)[:40], "return a + b"):
        assert trace not in str(body)
    assert "not given to you" not in body["system"]
    assert not errors_logged(caplog)


@files_on()
async def test_an_image_a_pdf_and_a_text_file_reach_claude_as_blocks_in_order(bot, caplog):
    caplog.set_level(logging.DEBUG)
    earlier, code = a_thread(bot.slack)

    body = await ask_in_thread(bot, *earlier, invoking_files=code)

    pdf = {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": b64(PDF)},
        "title": "report.pdf",
    }
    text = {
        "type": "document",
        "source": {"type": "text", "media_type": "text/plain", "data": CODE},
        "title": "add.py",
    }
    assert body["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Bob Builder: The whiteboard from today."},
                image_block(PNG),
                {"type": "text", "text": "Bob Builder: (shared a file)"},
                pdf,
                {"type": "text", "text": "Alice: what is in these?"},
                text,
            ],
        }
    ]
    assert "not given to you" not in body["system"]
    downloads = bot.slack.calls_to("url_private")
    assert len(downloads) == 3
    assert {call.headers["authorization"] for call in downloads} == {f"Bearer {bot.slack.bot_token}"}
    assert bot.slack.bot_token not in caplog.text
    assert "attached=3 left_out=0" in caplog.text  # counts only
    assert not errors_logged(caplog)


@files_on()
async def test_a_dm_with_a_photo_sends_the_photo_with_the_question(bot):
    photo = bot.slack.add_file(PNG, "image/png", "IMG_0042.png")
    now = f"{time.time():.6f}"  # within the DM's context window
    event = with_files(direct_message("what bird is this?", ts=now, subtype="file_share"), photo)
    bot.slack.add_history(DM, [event])

    await bot.send_event(event)
    await bot.finished()

    [request] = bot.claude.requests
    assert request.body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Alice: what bird is this?"}, image_block(PNG)]}
    ]


@files_on()
async def test_a_top_level_mention_sends_its_own_file(bot):
    photo = bot.slack.add_file(PNG, "image/png", "chart.png")
    event = with_files(mention(QUESTION, ts="300.000000"), photo)

    await bot.send_event(event)
    await bot.finished()

    assert not bot.slack.calls_to("conversations.replies")  # the event's own file references are enough

    [request] = bot.claude.requests
    assert request.body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Alice: what is in these?"}, image_block(PNG)]}
    ]


@files_on(MAX_FILE_BYTES="1000")
async def test_a_file_too_large_by_slacks_size_is_skipped_without_downloading_it(bot):
    big = bot.slack.add_file(PNG * 2, "image/png", "huge.png", user=BOB)  # Slack reports its real size

    body = await ask_in_thread(bot, with_files(said(BOB, "Look.", "100.000000"), big))

    assert not bot.slack.calls_to("url_private")
    assert body["messages"] == [{"role": "user", "content": "Bob Builder: Look.\n\nAlice: what is in these?"}]
    assert "1 file shared in this conversation was not given to you (one too large)" in body["system"]
    assert "huge.png" not in str(body)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@files_on(MAX_FILE_BYTES="1000")
async def test_a_file_larger_than_slack_said_is_skipped_once_its_body_passes_the_limit(bot, chunked):
    liar = bot.slack.add_file(PNG * 4, "image/png", "small.png", user=BOB, size=500, chunked=chunked)

    body = await ask_in_thread(bot, with_files(said(BOB, "Look.", "100.000000"), liar))

    assert len(bot.slack.calls_to("url_private")) == 1
    assert body["messages"] == [{"role": "user", "content": "Bob Builder: Look.\n\nAlice: what is in these?"}]
    assert "(one too large)" in body["system"]


@files_on(MAX_FILES="1")  # a file left out takes no place: the older photo still goes
async def test_an_unsupported_type_is_skipped_and_claude_told_in_one_line_without_its_name(bot):
    archive = bot.slack.add_file(b"PK\x03\x04" + bytes(100), "application/zip", "q3-salaries.zip", user=BOB)
    movie = bot.slack.add_file(b"\x00\x00\x00\x18ftypmp42", "video/mp4", "standup.mp4", user=BOB)
    photo = bot.slack.add_file(PNG, "image/png", "photo.png", user=BOB)

    body = await ask_in_thread(
        bot, with_files(said(BOB, "Files.", "100.000000"), archive, photo), invoking_files=(movie,)
    )

    assert [call.params["file"] for call in bot.slack.calls_to("url_private")] == [photo["id"]]
    notes = [line for line in body["system"].splitlines() if "not given to you" in line]
    assert notes == [
        "2 files shared in this conversation were not given to you (two of an unsupported type); "
        "say so if the answer may depend on them."
    ]
    assert "q3-salaries" not in str(body) and "standup" not in str(body)
    assert image_block(PNG) in body["messages"][0]["content"]


@files_on(MAX_FILES="2")
async def test_at_most_max_files_are_sent_the_newest_first(bot):
    pictures = [PNG + bytes([n]) * 10 for n in range(3)]
    shared = [bot.slack.add_file(p, "image/png", f"p{n}.png", user=BOB) for n, p in enumerate(pictures)]
    earlier = [with_files(said(BOB, f"picture {n}", f"100.00000{n}"), f) for n, f in enumerate(shared)]

    body = await ask_in_thread(bot, *earlier)

    assert len(bot.slack.calls_to("url_private")) == 2
    content = body["messages"][0]["content"]
    sent = [block["source"]["data"] for block in content if block["type"] == "image"]
    assert sent == [b64(pictures[1]), b64(pictures[2])]
    assert content[0]["text"].startswith("Bob Builder: picture 0\n\n")  # its words still go
    assert "(one beyond the limit of 2 files a question)" in body["system"]


@files_on()
async def test_a_failing_download_leaves_the_file_out_and_the_answer_goes_on(bot, caplog):
    bot.slack.fail("url_private", error="internal_error", status=500)
    photo = bot.slack.add_file(PNG, "image/png", "photo.png", user=BOB)

    body = await ask_in_thread(bot, with_files(said(BOB, "Look.", "100.000000"), photo))

    assert len(bot.slack.calls_to("url_private")) == 1
    assert body["messages"] == [{"role": "user", "content": "Bob Builder: Look.\n\nAlice: what is in these?"}]
    assert "(one could not be downloaded)" in body["system"]
    assert not errors_logged(caplog)


@files_on()
async def test_the_bot_token_goes_to_no_host_but_slacks(bot):
    async with FakeSlack() as elsewhere:  # another origin: a linked Google Drive file, say
        external = elsewhere.add_file(PNG, "image/png", "drive.png") | {"is_external": True}

        body = await ask_in_thread(bot, with_files(said(BOB, "Look.", "100.000000"), external))

        assert not elsewhere.calls_to("url_private")
    assert not bot.slack.calls_to("url_private")
    assert "(one not stored in Slack)" in body["system"]


async def test_slacks_sign_in_page_instead_of_the_file_is_not_sent(slack):
    """What Slack serves for a token without files:read: a 200 with its HTML sign-in page."""
    shared = slack.add_file(CODE.encode(), "text/plain", "notes.txt")
    message = SlackMessage(ts="1.000001", text="see notes", user=ALICE, files=(_ref(shared),))
    client = AsyncWebClient(token="xoxb-without-files-read", base_url=slack.api_url)

    files = await fetch_files(client, [message], _ask(message), OutboundSettings(send_files=True), timeout=5)

    assert len(slack.calls_to("url_private")) == 1
    assert files == Files({}, {shared["id"]: "could not be downloaded"})


def test_merged_turns_keep_text_and_files_in_order_and_text_only_turns_stay_strings():
    photo, notes = _attached("image"), _attached("notes")
    messages = [
        SlackMessage("1.1", "first", user="U1", files=(FileRef("F1", "a.png", "image/png", 10, "u"),)),
        SlackMessage("1.2", "second", user="U2", files=(FileRef("F2", "b.txt", "text/plain", 10, "u"),)),
        SlackMessage("1.3", "an answer", user="U0BOT", bot_id="B0BOT"),
        SlackMessage("1.4", "third", user="U1"),
    ]
    files = Files({"F1": photo, "F2": notes})

    prompt = build_prompt(
        messages, bot=BOT, names={"U1": "Ada", "U2": "Grace"}, system="S", budget_tokens=10_000, files=files
    )

    assert prompt.messages == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Ada: first"},
                photo.block,
                {"type": "text", "text": "Grace: second"},
                notes.block,
            ],
        },
        {"role": "assistant", "content": "an answer"},
        {"role": "user", "content": "Ada: third"},
    ]


def test_a_file_over_what_is_left_of_the_budget_is_left_out_and_its_words_kept():
    huge = Attached(_attached("huge").block, tokens=5_000)
    message = SlackMessage(
        "1.1", "read this", user="U1", files=(FileRef("F1", "big.txt", "text/plain", 1, "u"),)
    )

    prompt = build_prompt(
        [message], bot=BOT, names={"U1": "Ada"}, system="S", budget_tokens=1_000, files=Files({"F1": huge})
    )

    assert prompt.messages == [{"role": "user", "content": "Ada: read this"}]
    assert "(one over the context budget)" in prompt.system


async def test_files_on_the_bots_own_messages_are_not_fetched(slack):
    chart, photo = (slack.add_file(PNG, "image/png", name) for name in ("chart.png", "photo.png"))
    ours = SlackMessage("1.1", "a chart", user=BOT_USER, bot_id="B0BOT", files=(_ref(chart),))
    theirs = SlackMessage("1.2", "and a photo", user=ALICE, files=(_ref(photo),))
    client = AsyncWebClient(token=slack.bot_token, base_url=slack.api_url)

    files = await fetch_files(
        client, [ours, theirs], _ask(theirs), OutboundSettings(send_files=True), timeout=5
    )

    assert [call.params["file"] for call in slack.calls_to("url_private")] == [photo["id"]]
    assert list(files.attached) == [photo["id"]] and not files.left_out


def test_assistant_turns_stay_text_and_their_files_count_for_nothing():
    ours = SlackMessage(
        "1.1",
        "a chart",
        user=BOT_USER,
        bot_id="B0BOT",
        files=(
            FileRef("F1", "c.png", "image/png", 1, "u"),
            FileRef("F2", "d.zip", "application/zip", 1, "u"),
        ),
    )
    prompt = build_prompt(
        [SlackMessage("1.0", "hi", user="U1"), ours, SlackMessage("1.2", "thanks", user="U1")],
        bot=BOT,
        names={"U1": "Ada"},
        system="S",
        budget_tokens=1_000,
        files=Files({"F1": _attached("image")}, {"F2": "of an unsupported type"}),
    )
    assert [m["content"] for m in prompt.messages] == ["Ada: hi", "a chart", "Ada: thanks"]
    assert prompt.system == "S"


def _attached(label: str) -> Attached:
    source = {"type": "text", "media_type": "text/plain", "data": label}
    return Attached({"type": "document", "source": source}, tokens=10)


def _ref(file: dict) -> FileRef:
    return FileRef(file["id"], file["name"], file["mimetype"], file["size"], file["url_private"])


def _ask(message: SlackMessage) -> Ask:
    return Ask(
        request_id="Ev0TEST",
        surface="mention",
        origin=Origin(ALICE, "T0TEAM"),
        message=message,
        history=None,
        reply_to=InConversation(CHANNEL, None),
        bot=BOT,
    )


@files_on()
async def test_placeholders_run_in_message_order_through_messages_and_their_files(bot):
    """A secret in an older message keeps [slack token 1] though a newer file holds another: files are
    redacted where their message stands, so a shared file renumbers nothing said before it."""
    said_token = "xoxb-" + "1" * 12 + "-" + "2" * 13 + "-" + "FAKEfake" * 3
    filed_token = said_token.replace("FAKEfake", "fakeFAKE")
    env = bot.slack.add_file(f"SLACK_BOT_TOKEN={filed_token}\n".encode(), "text/plain", "prod.env", user=BOB)

    body = await ask_in_thread(
        bot, said(BOB, f"old one: {said_token}", "100.000000"), with_files(said(BOB, "", "100.000001"), env)
    )

    [turn] = body["messages"]
    assert turn["content"][0]["text"].startswith("Bob Builder: old one: [slack token 1]\n\n")
    assert turn["content"][1]["source"]["data"] == "SLACK_BOT_TOKEN=[slack token 2]\n"
