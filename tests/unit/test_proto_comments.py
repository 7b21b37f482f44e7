"""Every config field and message carries a comment (the text of ``recforge schema``)."""

from pathlib import Path

from recforge.tools.schema import message_comments, proto_comments, reachable_messages


def test_every_field_reachable_from_the_config_has_a_comment():
    comments = proto_comments()
    missing = [
        fd.full_name
        for desc in reachable_messages()
        for fd in desc.fields
        if not comments.get(fd.full_name)
    ]
    assert missing == [], f"{len(missing)} fields without a // comment above them: {missing}"


def test_every_message_reachable_from_the_config_has_a_comment():
    comments = message_comments()
    missing = [d.full_name for d in reachable_messages() if not comments.get(d.full_name)]
    assert missing == [], f"{len(missing)} messages without a // comment above them: {missing}"


def test_comments_are_read_after_nested_blocks_and_quoted_defaults(tmp_path: Path):
    (tmp_path / "a.proto").write_text(
        """syntax = "proto2";
package p;
// the outer message
message Outer {
    // before the oneof
    optional string a = 1;
    oneof choice {
        // first choice
        int32 b = 2;
    }
    // after the oneof
    optional string c = 3 [default = ";"];
    // a nested message
    message Inner {
        // inside
        optional bool d = 1;
    }
    // after the nested message
    optional Inner e = 4;  // and at the end of the line

    optional int32 f = 5;
}
""",
        encoding="utf-8",
    )
    assert proto_comments(tmp_path) == {
        "p.Outer.a": "before the oneof",
        "p.Outer.b": "first choice",
        "p.Outer.c": "after the oneof",
        "p.Outer.Inner.d": "inside",
        "p.Outer.e": "after the nested message and at the end of the line",
    }
    assert message_comments(tmp_path) == {
        "p.Outer": "the outer message",
        "p.Outer.Inner": "a nested message",
    }
