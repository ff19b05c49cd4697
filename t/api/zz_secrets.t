# Runs last (zz_): no key, token or encryption key ever reaches a response
# or the error log (LogLevel aiprov:trace8), for this file's requests and for
# everything the suite did before it. Every key the suite sends contains
# TESTSECRET and every bearer token TESTTOKEN (see t/fixtures/ApiAssert.pm).
# Secrets are compared with index(), never printed.
use strict;
use warnings;
use Apache::Test qw(-withtestmore);
use lib 't/lib', 't/fixtures';
use AiprovTest qw(:DEFAULT t_dir);
use ApiAssert;
use MIME::Base64 qw(decode_base64);

reset_db();

my $T = t_dir();
my $fixture = do {
    open my $fh, '<', "$T/fixtures/webcrypto.json" or die "webcrypto.json: $!";
    local $/;
    JSON::PP->new->decode(<$fh>);
};
sub slurp { my $f = shift; open my $fh, '<', $f or return ''; local $/; my $c = <$fh>; $c =~ s/\s+\z// if defined $c; $c // '' }
my @ENC_KEYS = grep { length } map { slurp("$T/conf/$_") } qw(aiprov.key other.key loose.key);

my $user = make_user('zz-user');
my $tok  = session($user);

my %KEY = (
    openai     => 'sk-TESTSECRET-zz-openai-4f1c9e',
    anthropic  => 'sk-ant-TESTSECRET-zz-77d2a0',
    openrouter => 'sk-or-v1-TESTSECRET-zz-c0ffee',
    groq       => 'gsk_TESTSECRET_zz_91b3',
    gemini     => 'AQ.TESTSECRET-zz-gemini',
    cohere     => 'TESTSECRET-zz-cohere-5a5a',
    ollama     => 'TESTSECRET-zz-ollama-key',
);
my @responses;
sub call {
    my ($res, $d) = api(@_);
    push @responses, [ "$_[0] $_[1]", $res ];
    ($res, $d);
}

subtest 'normal use' => sub {
    for my $p (sort keys %KEY) {
        my %b = (provider => $p, apiKey => $KEY{$p});
        $b{apiUrl} = 'http://localhost:11434' if $p eq 'ollama';
        my ($res, $d) = call(POST => M, token => $tok, json => \%b);
        is $res->code, 201, "create $p";
        my $id = ($d || {})->{id} // rand_uuid();
        call(GET => M . "/$id", token => $tok);
        call(PUT => M . "/$id", token => $tok, json => { keyLabel => "label $p" });
        call(GET => "/rotated/ai-providers/$id", token => $tok);
        call(GET => "/wrongkey/ai-providers/$id", token => $tok);
        call(GET => "/nokey/ai-providers/$id", token => $tok);
    }
    call(GET => M, token => $tok);
    my $rows = db()->selectall_arrayref('SELECT * FROM ai_provider', { Slice => {} });
    is scalar @$rows, 7, 'seven rows';
    ok !grep({ my $r = $_; grep { defined && index($_, SECRET_MARK) >= 0 } values %$r } @$rows),
       'no column of any row holds a plaintext key';
};

subtest 'refused requests carrying keys' => sub {
    my $id = (map { $_->{id} } @{ (fresh((call(GET => M, token => $tok))[0]) || {})->{providers} || [] })[0]
             // rand_uuid();
    my $bad = 'sk-TESTSECRET-zz-';
    my @cases = (
        [ 'wrong prefix', 400, POST => M, json => { provider => 'anthropic', apiKey => 'xx-TESTSECRET-zz-prefix' } ],
        [ 'space in key', 400, POST => M, json => { provider => 'cohere', apiKey => 'TESTSECRET zz space' } ],
        [ 'non-ASCII key', 400, POST => M, json => { provider => 'cohere', apiKey => "TESTSECRET-zz-\x{e9}t\x{e9}" } ],
        [ 'too long', 400, POST => M, json => { provider => 'openai', apiKey => $bad . ('Z' x 600) } ],
        [ 'key in an array', 400, POST => M, json => { provider => 'openai', apiKey => [ $bad . 'array' ] } ],
        [ 'key as object', 400, POST => M, json => { provider => 'openai', apiKey => { k => $bad . 'object' } } ],
        [ 'key in an unknown field', 400, POST => M, json => { provider => 'openai', apiKey => $bad . 'x1', secret => $bad . 'unknown' } ],
        [ 'key with a bad URL', 400, POST => M, json => { provider => 'openai', apiKey => $bad . 'x3', apiUrl => 'ftp://x' } ],
        [ 'PUT apiKey', 400, PUT => M . "/$id", json => { apiKey => $bad . 'put' } ],
        [ 'duplicate', 409, POST => M, json => { provider => 'openai', apiKey => $bad . 'duplicate' } ],
        [ 'unterminated string', 400, POST => M, body => qq({"provider":"openai","apiKey":"${bad}unterminated) ],
        [ 'truncated after key', 400, POST => M, body => qq({"provider":"openai","apiKey":"${bad}truncated") ],
        [ 'garbage after key', 400, POST => M, body => qq({"provider":"openai","apiKey":"${bad}garbage" !!!}) ],
        [ 'invalid UTF-8 in key', 400, POST => M, body => qq({"provider":"openai","apiKey":"${bad}utf8\xff\xfe"}) ],
        [ 'NUL in key', 400, POST => M, body => qq({"provider":"openai","apiKey":"${bad}nul\\u0000x"}) ],
        [ 'bad escape in key', 400, POST => M, body => qq({"provider":"openai","apiKey":"${bad}escape\\q"}) ],
        [ 'text/plain', 415, POST => M, body => qq({"provider":"openai","apiKey":"${bad}ctype"}), content_type => 'text/plain' ],
        [ 'no encryption key', 500, POST => '/nokey/ai-providers', json => { provider => 'groq', apiKey => 'gsk_TESTSECRET-zz-nokey' } ],
        [ 'too large', 413, POST => '/small/ai-providers', json => { provider => 'groq', apiKey => 'gsk_TESTSECRET-zz-large', keyLabel => 'x' x 3000 } ],
        [ 'no session', 401, POST => M, json => { provider => 'groq', apiKey => 'gsk_TESTSECRET-zz-nosession' }, no_token => 1 ],
        [ 'unknown token', 401, POST => M, json => { provider => 'groq', apiKey => 'gsk_TESTSECRET-zz-badtoken' },
          token => TOKEN_MARK . '-zz-unknown' ],
        [ 'wrong method', 405, DELETE => M, json => { apiKey => $bad . 'method' } ],
    );
    my $before = snapshot();
    for my $c (@cases) {
        my ($name, $status, $method, $path, %o) = @$c;
        my %opt = (token => $tok, %o);
        delete $opt{token} if delete $opt{no_token};
        my ($res) = call($method, $path, %opt);
        is $res->code, $status, "$name: $status";
    }
    is_deeply snapshot(), $before, 'nothing was written';
};

subtest 'no response carried a key, a token or ciphertext' => sub {
    my @ct = grep { defined } @{ db()->selectcol_arrayref('SELECT api_key FROM ai_provider') };
    my @leaks;
    for my $r (@responses) {
        my ($what, $res) = @$r;
        my $text = $res->as_string;
        push @leaks, "$what: key" if index($text, SECRET_MARK) >= 0;
        push @leaks, "$what: token" if index($text, TOKEN_MARK) >= 0;
        push @leaks, "$what: ciphertext" unless no_secret_in($text, @ct);
        push @leaks, "$what: encryption key" unless no_secret_in($text, @ENC_KEYS);
    }
    ok scalar(@responses) > 60, scalar(@responses) . ' responses looked at';
    is_deeply \@leaks, [], 'no leaks (the list names the request, never the secret)';
};

subtest 'the error log' => sub {
    my $log = error_log();
    ok length $log > 0, 'there is an error log';
    like $log, qr/aiprov/i, 'mod_aiprov logged to it (LogLevel aiprov:trace8), so the checks below mean something';
    ok index($log, SECRET_MARK) < 0, 'no API key of the whole suite (marker TESTSECRET)';
    ok index($log, TOKEN_MARK) < 0, 'no bearer token of the whole suite (marker TESTTOKEN)';
    ok index($log, $fixture->{plaintext}) < 0, 'not the Web Crypto fixture plaintext';
    ok index($log, 'sk-Zq7X') < 0, 'not the short keys of validation.t';
    for my $i (0 .. $#ENC_KEYS) {
        my $k = $ENC_KEYS[$i];
        my $raw = decode_base64($k);
        ok no_secret_in($log, $k, unpack('H*', $raw), uc unpack('H*', $raw), length $raw >= 16 ? $raw : ()),
           "encryption key file #$i: not in the log (base64, hex or raw)";
    }
    my @ct = grep { defined && length > 20 } @{ db()->selectcol_arrayref('SELECT api_key FROM ai_provider') };
    ok no_secret_in($log, @ct, $fixture->{ciphertext}), 'no stored ciphertext either';
};

done_testing();
