# Input validation: every field's types and bounds, key formats, malformed
# bodies, sizes, content types, methods and paths. Every refused request must
# leave the database exactly as it was.
use strict;
use warnings;
use Apache::Test qw(-withtestmore);
use Apache::TestRequest ();
use lib 't/lib', 't/fixtures';
use AiprovTest;
use ApiAssert;
use HTTP::Response ();
use IO::Select ();
use IO::Socket::INET ();

reset_db();

my $user = make_user('val-user');
my $tok  = session($user);
my $K    = 'sk-TESTSECRET-val-openai-0001abcd';

my $JS = JSON::PP->new->ascii->allow_nonref;
sub js { $JS->encode($_[0]) }    # a Perl string as a JSON string literal

# A JSON object from (name => raw JSON text) pairs; undef drops the pair.
sub obj {
    my @kv = @_;
    my @parts;
    for (my $i = 0; $i < @kv; $i += 2) {
        push @parts, js($kv[$i]) . ':' . $kv[$i + 1] if defined $kv[$i + 1];
    }
    '{' . join(',', @parts) . '}';
}

# The valid create body with some fields replaced (raw JSON values).
sub create_body {
    my %o = (provider => '"openai"', apiKey => js($K), @_);
    obj(map { $_ => $o{$_} } sort keys %o);
}

# Refused: status and code, the error shape, and no change in the DB.
sub refused {
    my ($name, $method, $path, $opt, $status, $code, %chk) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    subtest $name => sub {
        my $before = snapshot();
        my ($res) = api($method, $path, token => $tok, %$opt);
        is_error($res, $status, $code, 'error', %chk);
        is_deeply snapshot(), $before, 'database unchanged';
    };
}
sub post_bad {
    my ($name, $raw, $code, %chk) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    refused($name, POST => M, { body => $raw }, 400, $code // 'INVALID_REQUEST', %chk);
}

# Accepted: 201, then the row is removed again so the next case starts clean.
sub post_good {
    my ($name, $raw, %opt) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my ($res) = api(POST => $opt{path} // M, token => $tok, body => $raw,
                    exists $opt{content_type} ? (content_type => $opt{content_type}) : ());
    my $d = fresh($res) || {};
    my $ok = is($res->code, 201, "$name: accepted (201)");
    diag("got $d->{error}: $d->{message}") if !$ok && $d->{error};
    my $id = $d->{id};
    my $p;
    if ($id && $id =~ UUID_RE) {
        $p = (fresh((api(GET => M . "/$id", token => $tok))[0]) || {})->{provider};
        db()->do('DELETE FROM ai_provider WHERE id = ?', undef, $id);
    }
    $p;
}

sub put_bad {
    my ($name, $id, $raw, $code, %chk) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    refused($name, PUT => M . "/$id", { body => $raw }, 400, $code // 'INVALID_REQUEST', %chk);
}

subtest 'the base body is valid' => sub {
    my $p = post_good('base', create_body());
    is $p && $p->{provider}, 'openai', 'created and readable';
};

# ---------------------------------------------------------------- provider
post_bad("provider missing", create_body(provider => undef), undef, field => 'provider');
for my $v ('null', '1', 'true', '[]', '{}', '["openai"]', '"OpenAI"', '"azure"', '""', '"openai "') {
    post_bad("provider $v", create_body(provider => $v), undef, field => 'provider');
}

# ---------------------------------------------------------------- apiKey types
post_bad('apiKey missing (openai)', create_body(apiKey => undef), undef, field => 'apiKey');
for my $v ('null', '12345678', 'true', '[]', '{}', js([$K]), obj(key => js($K))) {
    (my $shown = $v) =~ s/TESTSECRET\S*?(?=")/.../g;
    post_bad("apiKey $shown", create_body(apiKey => $v), undef, field => 'apiKey');
}

# ---------------------------------------------------------------- apiKey formats
my $ikey = 'INVALID_API_KEY';
for my $case (
    [ 'empty', 'openai', '' ],
    [ '7 bytes', 'openai', 'sk-Zq7X' ],
    [ '513 bytes', 'openai', 'sk-TESTSECRET-' . ('A' x 499) ],
    [ 'openai without sk-', 'openai', 'pk-TESTSECRET-val-0001' ],
    [ 'openai SK- uppercase', 'openai', 'SK-TESTSECRET-val-0001' ],
    [ 'leading space', 'openai', ' sk-TESTSECRET-val-0001' ],
    [ 'trailing space', 'openai', 'sk-TESTSECRET-val-0001 ' ],
    [ 'inner space', 'openai', 'sk-TESTSECRET val-0001' ],
    [ 'tab', 'openai', "sk-TESTSECRET\tval-0001" ],
    [ 'newline', 'openai', "sk-TESTSECRET-val-0001\n" ],
    [ 'non-ASCII', 'openai', "sk-TESTSECRET-val-\x{e9}0001" ],
    [ 'DEL', 'openai', "sk-TESTSECRET-val-\x{7f}0001" ],
    [ 'anthropic with sk- only', 'anthropic', 'sk-TESTSECRET-ant-0002' ],
    [ 'anthropic with openai-style', 'anthropic', 'sk-proj-TESTSECRET-0002' ],
    [ 'openrouter with sk- only', 'openrouter', 'sk-TESTSECRET-or-0003' ],
    [ 'groq with gsk-', 'groq', 'gsk-TESTSECRET-0004' ],
    [ 'groq with sk-', 'groq', 'sk-TESTSECRET-0004' ],
    [ 'gemini with a space', 'gemini', 'AIza TESTSECRET0005' ],
    [ 'cohere non-ASCII', 'cohere', "TESTSECRET-coh\x{fc}re-0006" ],
) {
    my ($name, $prov, $key) = @$case;
    post_bad("key: $name", create_body(provider => js($prov), apiKey => js($key)), $ikey);
}
subtest 'key format on ollama too (optional key, still checked)' => sub {
    post_bad('ollama key with a space', create_body(provider => '"ollama"', apiUrl => '"http://localhost:11434"',
                                                   apiKey => js('TESTSECRET ollama')), $ikey);
};
for my $case (
    [ '8 bytes', 'openai', 'sk-Zq7X9' ],
    [ '512 bytes', 'openai', 'sk-TESTSECRET-' . ('A' x 498) ],
    [ 'every printable ASCII', 'cohere', 'TESTSECRET' . join('', map { chr } 0x21 .. 0x7e) ],
    [ 'anthropic sk-ant-', 'anthropic', 'sk-ant-TESTSECRET-0002' ],
    [ 'openrouter sk-or-', 'openrouter', 'sk-or-TESTSECRET-0003' ],
    [ 'openai sk-proj-', 'openai', 'sk-proj-TESTSECRET-0001' ],
    [ 'groq gsk_', 'groq', 'gsk_TESTSECRET-0004' ],
    [ 'gemini AIza', 'gemini', 'AIzaTESTSECRET0005' ],
    [ 'gemini AQ.', 'gemini', 'AQ.TESTSECRET0005' ],
    [ 'gemini no prefix', 'gemini', 'TESTSECRET-gemini-0005' ],
    [ 'cohere no prefix', 'cohere', 'TESTSECRETcohere0006' ],
) {
    my ($name, $prov, $key) = @$case;
    my $p = post_good("key: $name", create_body(provider => js($prov), apiKey => js($key)));
    is $p && $p->{keyHash}, sha256_hex($key), "key: $name: keyHash of exactly that key";
}

# ---------------------------------------------------------------- keyLabel
for my $v ('5', 'true', '[]', '{}', '""', js('L' x 101), '"a\tb"', '"a\nb"', '"\u0001x"', '"x\u007f"',
           '"' . ('\u00e9' x 51) . '"', '"' . ('\u20ac' x 34) . '"') {
    my $shown = length $v > 30 ? substr($v, 0, 12) . '...(' . length($v) . ')' : $v;
    post_bad("keyLabel $shown", create_body(keyLabel => $v), undef, field => 'keyLabel');
}
subtest 'keyLabel bounds are bytes of UTF-8' => sub {
    my $p = post_good('100 ASCII bytes', create_body(keyLabel => js('L' x 100)));
    is $p && $p->{keyLabel}, 'L' x 100, '100 bytes kept';
    $p = post_good('50 x e-acute = 100 bytes', create_body(keyLabel => '"' . ('\u00e9' x 50) . '"'));
    is $p && $p->{keyLabel}, "\x{e9}" x 50, 'round-trips as characters';
    $p = post_good('33 x euro = 99 bytes', create_body(keyLabel => '"' . ('\u20ac' x 33) . '"'));
    is $p && $p->{keyLabel}, "\x{20ac}" x 33, 'round-trips';
    $p = post_good('raw UTF-8 and an astral character', create_body(keyLabel => qq("caf\xc3\xa9 \\ud83d\\ude80")));
    is $p && $p->{keyLabel}, "caf\x{e9} \x{1f680}", 'round-trips';
};

# ---------------------------------------------------------------- isDefault / isActive
for my $v ('"true"', '1', '0', 'null', '[]', '"false"') {
    post_bad("isDefault $v", create_body(isDefault => $v), undef, field => 'isDefault');
}
post_bad('isActive is not accepted on create', create_body(isActive => 'true'), undef, field => 'isActive');
post_bad('isActive false on create', create_body(isActive => 'false'), undef, field => 'isActive');

# ---------------------------------------------------------------- usageLimit
for my $v ('-1', '1.5', '1.0', '1e300', '1E2', '"5"', 'true', '[]', '{}', '9007199254740992',
           '-9007199254740991') {
    post_bad("usageLimit $v", create_body(usageLimit => $v), undef, field => 'usageLimit');
}
# beyond 64 bits a JSON parser may fail before it knows the field
post_bad('usageLimit 99999999999999999999', create_body(usageLimit => '99999999999999999999'));
subtest 'usageLimit bounds' => sub {
    my $p = post_good('9007199254740991', create_body(usageLimit => '9007199254740991'));
    is $p && $p->{usageLimit}, 9007199254740991, 'usageLimit 2^53-1';
    is $p && $p->{usageRemaining}, 9007199254740991, 'usageRemaining 2^53-1';
    $p = post_good('0', create_body(usageLimit => '0'));
    is $p && $p->{usageLimit}, 0, 'usageLimit 0';
    $p = post_good('null', create_body(usageLimit => 'null'));
    ok $p && exists $p->{usageLimit} && !defined $p->{usageLimit}, 'usageLimit null';
};
subtest 'usageLimit 2^53-1 is written as an exact integer' => sub {
    my ($res, $d) = api(POST => M, token => $tok, body => create_body(usageLimit => '9007199254740991'));
    is $res->code, 201, 'created';
    my $id = ($d || {})->{id} // rand_uuid();
    my ($g) = api(GET => M . "/$id", token => $tok);
    like $g->content, qr/"usageLimit"\s*:\s*9007199254740991\s*[,}]/, 'literally 9007199254740991 in the JSON';
    is row($id) && row($id)->{usage_limit}, '9007199254740991', 'and in the DB';
    db()->do('DELETE FROM ai_provider WHERE id = ?', undef, $id);
};

# ---------------------------------------------------------------- apiUrl
my $long_url = 'https://example.test/' . ('a' x (2048 - length 'https://example.test/'));
for my $v ('5', 'true', '[]', '{}', '""', '"ftp://example.test/"', '"localhost:11434"', '"javascript:alert(1)"',
           '"http://a b.test/"', '"http://x.test/\u0001"', '"http://x.test/\n"', js($long_url . 'a')) {
    my $shown = length $v > 30 ? substr($v, 0, 12) . '...(' . length($v) . ')' : $v;
    post_bad("apiUrl $shown", create_body(apiUrl => $v), undef, field => 'apiUrl');
}
post_bad('ollama apiUrl null', create_body(provider => '"ollama"', apiKey => undef, apiUrl => 'null'),
         undef, field => 'apiUrl');
post_bad('ollama apiUrl ftp', create_body(provider => '"ollama"', apiKey => undef, apiUrl => '"ftp://h/"'),
         undef, field => 'apiUrl');
subtest 'apiUrl bounds' => sub {
    my $p = post_good('2048 bytes', create_body(apiUrl => js($long_url)));
    is $p && $p->{apiUrl}, $long_url, '2048-byte URL kept';
    $p = post_good('http on openai', create_body(apiUrl => '"http://proxy.example.test:8080/v1"'));
    is $p && $p->{apiUrl}, 'http://proxy.example.test:8080/v1', 'kept';
};

# ---------------------------------------------------------------- providerConfig / configuration
for my $v ('[]', '"x"', '5', 'true', '[{}]') {
    post_bad("providerConfig $v", create_body(providerConfig => $v), undef, field => 'providerConfig');
    post_bad("configuration $v", create_body(configuration => $v), undef, field => 'configuration');
}
post_bad('providerConfig over 16 KiB', create_body(providerConfig => obj(k => js('x' x 17000))),
         undef, field => 'providerConfig');
post_bad('providerConfig and configuration together',
         create_body(providerConfig => '{"a":1}', configuration => '{"a":1}'), undef,
         field => qr/providerConfig|configuration/);
subtest 'providerConfig within bounds' => sub {
    my $p = post_good('15000-byte object', create_body(providerConfig => obj(k => js('x' x 15000))));
    is $p && length(($p->{providerConfig} || {})->{k} // ''), 15000, 'kept whole';
    $p = post_good('configuration null', create_body(configuration => 'null'));
    ok $p && exists $p->{providerConfig} && !defined $p->{providerConfig}, 'null';
};

# ---------------------------------------------------------------- supportedModels
for my $v ('{}', '"x"', '5', '[1]', '[null]', '[""]', '[[]]', '[{}]', js(['a' x 201]), js([ ('m') x 501 ])) {
    my $shown = length $v > 30 ? substr($v, 0, 12) . '...(' . length($v) . ')' : $v;
    post_bad("supportedModels $shown", create_body(supportedModels => $v), undef, field => 'supportedModels');
}
subtest 'supportedModels bounds' => sub {
    my @m = map { sprintf('%03d', $_) . ('m' x 197) } 1 .. 500;
    my $p = post_good('500 models of 200 bytes', create_body(supportedModels => js(\@m)));
    is_deeply $p && $p->{supportedModels}, \@m, 'kept in order';
};

# ---------------------------------------------------------------- providerUserId
for my $v ('5', '""', js('u' x 256), '[]', '{}', 'true') {
    my $shown = length $v > 30 ? substr($v, 0, 12) . '...(' . length($v) . ')' : $v;
    post_bad("providerUserId $shown", create_body(providerUserId => $v), undef, field => 'providerUserId');
}
subtest 'providerUserId bounds' => sub {
    my $p = post_good('255 bytes', create_body(providerUserId => js('u' x 255)));
    is $p && $p->{providerUserId}, 'u' x 255, 'kept';
};

# ---------------------------------------------------------------- unknown fields
for my $f (qw(foo api_key userId user_id id createdAt keyHash currentUsage usageRemaining accessToken)) {
    post_bad("unknown field $f", create_body($f => '"x"'), undef, field => $f);
}

# ---------------------------------------------------------------- malformed bodies
for my $case (
    [ 'empty body', '' ],
    [ 'white space only', "  \n " ],
    [ 'truncated', '{"provider":' ],
    [ 'unquoted names', '{provider:"openai"}' ],
    [ 'single quotes', q({'provider':'openai'}) ],
    [ 'trailing comma', '{"provider":"openai",}' ],
    [ 'trailing garbage', create_body() . ' x' ],
    [ 'two objects', create_body() . '{}' ],
    [ 'array', '[]' ],
    [ 'array of the object', '[' . create_body() . ']' ],
    [ 'string', '"x"' ],
    [ 'number', '42' ],
    [ 'null', 'null' ],
    [ 'true', 'true' ],
    [ 'invalid UTF-8 in a string', create_body(keyLabel => qq("\xff\xfe")) ],
    [ 'lone surrogate', create_body(keyLabel => '"\ud800"') ],
    [ 'NUL in keyLabel', create_body(keyLabel => '"a\u0000b"') ],
    [ 'NUL in provider', create_body(provider => '"openai\u0000"') ],
    [ 'NUL in apiKey', create_body(apiKey => '"sk-TESTSECRET-nul\u0000x"') ],
    [ 'NUL in a field name', '{"provider":"openai","apiKey":' . js($K) . ',"key\u0000Label":"x"}' ],
    [ 'very deep nesting', create_body(providerConfig => '{"a":' x 20000 . '1' . '}' x 20000) ],
    [ 'very deep arrays', create_body(supportedModels => '[' x 50000 . ']' x 50000) ],
) {
    post_bad($case->[0], $case->[1]);
}
subtest 'the server survived the deep nesting' => sub {
    my ($res) = api(GET => M, token => $tok);
    is $res->code, 200, 'list still answers';
};

# ---------------------------------------------------------------- SQL metacharacters
subtest 'SQL quotes in a label are stored verbatim' => sub {
    my $rows = count_rows();
    for my $label (q{'); DROP TABLE ai_provider;--}, q{Robert"); DELETE FROM session; --},
                   q{%s %d %n \\ \\' ''}, q{' OR '1'='1}) {
        my ($res, $d) = api(POST => M, token => $tok,
                            json => { provider => 'cohere', apiKey => 'TESTSECRET-sql-0006', keyLabel => $label });
        is $res->code, 201, "created with label $label";
        my $id = ($d || {})->{id} // rand_uuid();
        my $p = (fresh((api(GET => M . "/$id", token => $tok))[0]) || {})->{provider} || {};
        is $p->{keyLabel}, $label, 'keyLabel verbatim';
        is row($id) && row($id)->{key_label}, $label, 'key_label verbatim in the DB';
        my ($u) = api(PUT => M . "/$id", token => $tok, json => { keyLabel => "$label 2" });
        is $u->code, 200, 'updated with quotes';
        is row($id) && row($id)->{key_label}, "$label 2", 'updated verbatim';
        db()->do('DELETE FROM ai_provider WHERE id = ?', undef, $id);
    }
    is count_rows(), $rows, 'the table is still there, nothing else touched';
    my ($res) = api(GET => M, token => $tok);
    is $res->code, 200, 'sessions intact: the token still works';
};

# ---------------------------------------------------------------- sizes
my $MiB = 1024 * 1024;
sub padded { my $n = shift; my $b = create_body(); substr($b, -1, 0, ' ' x ($n - length $b)); $b }

subtest 'body limits (1 MiB default)' => sub {
    my $big = create_body(keyLabel => js('x' x (2 * $MiB)));
    refused('2 MiB', POST => M, { body => $big }, 413, 'PAYLOAD_TOO_LARGE');
    refused('1 MiB + 1 byte', POST => M, { body => padded($MiB + 1) }, 413, 'PAYLOAD_TOO_LARGE');
    my $ok = padded($MiB);
    is length $ok, $MiB, 'a body of exactly 1 MiB';
    post_good('exactly 1 MiB is accepted', $ok);
    my ($id) = grep { defined } map { $_->{id} } @{ (fresh((api(GET => M, token => $tok))[0]) || {})->{providers} || [] };
    ok !defined $id, 'no leftovers';
};

my $S = '/small/ai-providers';
subtest 'LimitRequestBody 2048 (/small)' => sub {
    refused('3 KiB', POST => $S, { body => padded(3 * 1024) }, 413, 'PAYLOAD_TOO_LARGE');
    refused('2049 bytes', POST => $S, { body => padded(2049) }, 413, 'PAYLOAD_TOO_LARGE');
    post_good('exactly 2048 bytes', padded(2048), path => $S);
    my $id = create_ok(M, $tok, { provider => 'groq', apiKey => 'gsk_TESTSECRET-small' }, 'a row to PUT');
    refused('PUT 3 KiB', PUT => "$S/" . ($id // rand_uuid()),
            { body => obj(keyLabel => js('x'), pad => js(' ' x 3072)) }, 413, 'PAYLOAD_TOO_LARGE');
    db()->do('DELETE FROM ai_provider WHERE id = ?', undef, $id) if $id;
};

# A request written by hand, for a chunked body LWP will not send.
sub chunked_request {
    my ($path, $body, %h) = @_;
    my ($host, $port) = split /:/, Apache::TestRequest::hostport();
    my $s = IO::Socket::INET->new(PeerAddr => $host, PeerPort => $port, Timeout => 30)
        or return HTTP::Response->new(599, "connect: $!");
    binmode $s;
    $h{Authorization} //= "Bearer $tok";
    $h{'Content-Type'} //= 'application/json';
    my $head = "POST $path HTTP/1.1\r\nHost: $host:$port\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n"
             . join('', map { "$_: $h{$_}\r\n" } sort keys %h) . "\r\n";
    local $SIG{PIPE} = 'IGNORE';
    syswrite $s, $head;
    my $sel = IO::Select->new($s);
    for (my $off = 0; $off < length $body; $off += 16384) {
        last if $sel->can_read(0);    # the server has answered early
        my $c = substr($body, $off, 16384);
        defined syswrite($s, sprintf("%x\r\n", length $c) . $c . "\r\n") or last;
    }
    syswrite $s, "0\r\n\r\n" unless $sel->can_read(0);
    my $raw = '';
    while ($sel->can_read(30)) { my $n = sysread $s, $raw, 65536, length $raw; last unless $n }
    close $s;
    my $res = HTTP::Response->parse($raw);
    if (($res->header('Transfer-Encoding') // '') =~ /chunked/i) {
        my ($in, $out) = ($res->content, '');
        while ($in =~ s/\A([0-9a-fA-F]+)[^\r\n]*\r\n//) {
            my $n = hex $1;
            last if $n == 0;
            $out .= substr($in, 0, $n, '');
            $in =~ s/\A\r\n//;
        }
        $res->content($out);
    }
    $res;
}

subtest 'chunked bodies' => sub {
    my $before = snapshot();
    my $res = chunked_request(M, create_body(keyLabel => js('x' x (2 * $MiB))));
    is_error($res, 413, 'PAYLOAD_TOO_LARGE', 'chunked 2 MiB on /api');
    is_deeply snapshot(), $before, 'database unchanged';
    $res = chunked_request($S, padded(3 * 1024));
    is_error($res, 413, 'PAYLOAD_TOO_LARGE', 'chunked 3 KiB on /small');
    is_deeply snapshot(), $before, 'database unchanged';
    $res = chunked_request(M, create_body(keyLabel => '"chunked"'));
    is $res->code, 201, 'a small chunked body is read whole (201)';
    my $id = (fresh($res) || {})->{id};
    is $id && row($id) && row($id)->{key_label}, 'chunked', 'stored';
    db()->do('DELETE FROM ai_provider WHERE id = ?', undef, $id) if $id;
};

# ---------------------------------------------------------------- content types
for my $ct ('text/plain', 'application/x-www-form-urlencoded', 'application/jsonx', 'application/json-patch+json',
            'text/json', 'multipart/form-data; boundary=x') {
    refused("Content-Type $ct", POST => M, { body => create_body(), content_type => $ct }, 415,
            'UNSUPPORTED_MEDIA_TYPE');
}
refused('no Content-Type', POST => M, { body => create_body(), content_type => '' }, 415, 'UNSUPPORTED_MEDIA_TYPE');
for my $ct ('application/json; charset=utf-8', 'Application/JSON', 'application/json;charset=UTF-8') {
    post_good("Content-Type $ct", create_body(), content_type => $ct);
}

# ---------------------------------------------------------------- PUT
my $pid = create_ok(M, $tok, { provider => 'anthropic', apiKey => 'sk-ant-TESTSECRET-put-0002', keyLabel => 'P' },
                    'a row to update') // rand_uuid();
put_bad('PUT apiKey', $pid, obj(apiKey => js('sk-ant-TESTSECRET-put-0099')));
put_bad('PUT apiKey null', $pid, obj(apiKey => 'null'));
put_bad('PUT apiKey with a valid field', $pid, obj(keyLabel => '"new"', apiKey => js('sk-ant-TESTSECRET-put-0098')));
for my $f (qw(provider apiUrl providerUserId configuration id foo createdAt keyHash currentUsage)) {
    put_bad("PUT $f", $pid, obj($f => '"x"'), undef, field => $f);
}
for my $v ('5', '""', js('L' x 101), '"a\tb"', '[]') {
    my $shown = length $v > 30 ? substr($v, 0, 12) . '...' : $v;
    put_bad("PUT keyLabel $shown", $pid, obj(keyLabel => $v), undef, field => 'keyLabel');
}
for my $v ('"false"', '0', 'null', '[]') {
    put_bad("PUT isActive $v", $pid, obj(isActive => $v), undef, field => 'isActive');
    put_bad("PUT isDefault $v", $pid, obj(isDefault => $v), undef, field => 'isDefault');
}
for my $v ('-1', '1.5', '1.0', '"5"', '9007199254740992') {
    put_bad("PUT usageLimit $v", $pid, obj(usageLimit => $v), undef, field => 'usageLimit');
}
put_bad('PUT supportedModels {}', $pid, obj(supportedModels => '{}'), undef, field => 'supportedModels');
put_bad('PUT supportedModels [1]', $pid, obj(supportedModels => '[1]'), undef, field => 'supportedModels');
put_bad('PUT providerConfig []', $pid, obj(providerConfig => '[]'), undef, field => 'providerConfig');
put_bad('PUT a valid field with an invalid one', $pid, obj(keyLabel => '"ok"', usageLimit => '-1'),
        undef, field => 'usageLimit');
for my $case ([ 'empty', '' ], [ 'array', '[]' ], [ 'string', '"x"' ], [ 'broken', '{"keyLabel":' ],
              [ 'NUL', '{"keyLabel":"a\u0000b"}' ]) {
    put_bad("PUT body $case->[0]", $pid, $case->[1]);
}
refused('PUT text/plain', PUT => M . "/$pid", { body => '{"keyLabel":"x"}', content_type => 'text/plain' },
        415, 'UNSUPPORTED_MEDIA_TYPE');
refused('PUT 2 MiB', PUT => M . "/$pid", { body => obj(keyLabel => js('x' x (2 * $MiB))) },
        413, 'PAYLOAD_TOO_LARGE');

# ---------------------------------------------------------------- methods
my $uuid = rand_uuid();
for my $case (
    [ DELETE => M,                          [qw(GET POST)] ],
    [ PUT    => M,                          [qw(GET POST)] ],
    [ PATCH  => M,                          [qw(GET POST)] ],
    [ POST   => M . "/$pid",                [qw(DELETE GET PUT)] ],
    [ PATCH  => M . "/$pid",                [qw(DELETE GET PUT)] ],
    [ POST   => M . "/$uuid",               [qw(DELETE GET PUT)] ],
    [ GET    => M . '/openrouter/authorize', ['POST'] ],
    [ DELETE => M . '/openrouter/exchange',  ['POST'] ],
    [ GET    => M . '/openrouter/exchange',  ['POST'] ],
) {
    my ($method, $path, $allow) = @$case;
    my %body = $method =~ /^(?:POST|PUT|PATCH)$/ ? (body => create_body()) : ();
    refused("$method $path", $method, $path, \%body, 405, 'METHOD_NOT_ALLOWED', allow => $allow);
}
subtest 'method is checked before identity' => sub {
    my ($res) = api(DELETE => M);
    is_error($res, 405, 'METHOD_NOT_ALLOWED', 'DELETE without a token', allow => [qw(GET POST)]);
};

# ---------------------------------------------------------------- paths and ids
for my $path (M . '/foo/bar', M . "/$uuid/extra", M . '/openrouter/nope', M . '/openrouter/authorize/x',
              M . "/$pid/keys") {
    refused("unknown path $path (GET)", GET => $path, {}, 400, 'INVALID_REQUEST');
}
refused('unknown path (POST)', POST => M . '/foo/bar', { body => create_body() }, 400, 'INVALID_REQUEST');
(my $nodash = $uuid) =~ s/-//g;
for my $bad ('123', 'not-a-uuid', $nodash, "${uuid}0", substr($uuid, 1), 'g' . substr($uuid, 1),
             "$uuid%20", "{$uuid}") {
    refused("id '$bad' (GET)", GET => M . "/$bad", {}, 400, 'INVALID_REQUEST', field => 'id');
}
refused('bad id (PUT)', PUT => M . '/123', { body => '{}' }, 400, 'INVALID_REQUEST', field => 'id');
refused('bad id (DELETE)', DELETE => M . '/not-a-uuid', {}, 400, 'INVALID_REQUEST', field => 'id');
subtest 'path is checked before identity' => sub {
    my ($res) = api(GET => M . '/foo/bar');
    is_error($res, 400, 'INVALID_REQUEST', 'unknown path without a token');
    ($res) = api(GET => M . '/123');
    is_error($res, 400, 'INVALID_REQUEST', 'bad id without a token', field => 'id');
};
subtest 'identity is checked before the body' => sub {
    my ($res) = api(POST => M, body => 'garbage', content_type => 'text/plain');
    is_error($res, 401, 'UNAUTHORIZED', 'bad body and content type, no token');
};
subtest 'content type is checked before the body is parsed' => sub {
    my ($res) = api(POST => M, token => $tok, body => '{broken', content_type => 'text/plain');
    is_error($res, 415, 'UNSUPPORTED_MEDIA_TYPE', 'broken body as text/plain');
};

# ---------------------------------------------------------------- OPTIONS
for my $case ([ M, [qw(GET POST)] ], [ M . "/$uuid", [qw(DELETE GET PUT)] ],
              [ M . '/openrouter/authorize', ['POST'] ], [ M . '/openrouter/exchange', ['POST'] ]) {
    my ($path, $allow) = @$case;
    subtest "OPTIONS $path (no token)" => sub {
        my $before = snapshot();
        my ($res) = api(OPTIONS => $path);
        is $res->code, 204, 'status 204';
        is_deeply allow_set($res), [ sort @$allow ], 'Allow: ' . join(', ', @$allow);
        is length($res->content), 0, 'no body';
        no_store($res);
        is_deeply snapshot(), $before, 'database unchanged';
    };
}
refused('OPTIONS on an unknown path', OPTIONS => M . '/foo/bar', {}, 400, 'INVALID_REQUEST');

done_testing();
