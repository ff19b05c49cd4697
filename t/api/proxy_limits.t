# The metered proxy's limit. The guarantee, from aiprov_api_proxy.c's header:
# a call is let through only while current_usage < usage_limit, and its usage
# is added when it ends; so every call admitted counts, and once the usage
# that reaches the limit is written every later call gets 429
# USAGE_LIMIT_EXCEEDED (before anything is forwarded, without Retry-After).
# Checked one call at a time and with concurrent calls (on whichever backend
# the run uses: tools/test.sh runs SQLite and PostgreSQL).
use strict;
use warnings;
use Apache::Test qw(-withtestmore);
use lib 't/lib', 't/fixtures';
use AiprovTest;
use ApiAssert;
use HTTP::Request ();
use JSON::PP ();
use LWP::UserAgent ();
use POSIX ();
use Time::HiRes qw(time sleep);

my $JSON = JSON::PP->new->utf8->canonical;
sub captured { mock_captured() }

my $KEY = 'sk-' . rand_hex(6) . '-TESTSECRET-pxlim';
my $AKEY = 'sk-ant-' . rand_hex(6) . '-TESTSECRET-pxlim';

reset_db();
my $user = make_user('pxlim-user');
my $tok  = session($user);

my @responses;
sub call { my ($res, $d) = api(@_); push @responses, $res; ($res, $d) }
sub usage_of { my $r = row(shift); $r ? $r->{current_usage} : undef }
sub detail { my ($res, $d) = api(GET => M . "/$_[0]", token => $tok); ($d || {})->{provider} || {} }
sub set_limit {
    my ($id, $limit) = @_;
    my ($res) = call(PUT => M . "/$id", token => $tok, json => { usageLimit => $limit });
    $res->code == 200 or diag 'PUT usageLimit: ' . $res->code;
}

sub chat { my ($id, %o) = @_;
           call(POST => M . "/$id/proxy/chat/completions", token => $tok,
                json => { model => 'x', mock_prompt_tokens => 5, mock_completion_tokens => 10, %o }) }

sub refused {
    my ($res, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    is_error($res, 429, 'USAGE_LIMIT_EXCEEDED', $name);
    ok !defined $res->header('Retry-After'), "$name: no Retry-After (waiting does not help)";
}

my $id = create_ok(M, $tok, { provider => 'openai', apiKey => $KEY, usageLimit => 20 }, 'openai, limit 20')
    // rand_uuid();

subtest 'calls go through while usage < limit; the one that crosses it counts in full' => sub {
    mock_reset();
    my ($res) = chat($id);
    is $res->code, 200, 'first call (usage 0 < 20): 200';
    is usage_of($id), 15, 'usage 15';
    ($res) = chat($id);
    is $res->code, 200, 'second call (usage 15 < 20): 200';
    is usage_of($id), 30, 'usage 30: the call that crossed the limit counted in full';
    is scalar @{ captured() }, 2, 'two requests forwarded';
    my $d = detail($id);
    is $d->{currentUsage}, 30, 'currentUsage 30';
    is $d->{usageRemaining}, 0, 'usageRemaining 0 (floored)';
    is $d->{usageLimit}, 20, 'usageLimit unchanged';
};

subtest 'once usage >= limit: 429 before anything is forwarded, nothing counted' => sub {
    my $stamp = row($id)->{last_used_at};
    my @cases = ([POST => 'chat/completions', json => { stream => JSON::PP::true }],
                 [POST => 'chat/completions', json => { model => 'x' }],
                 [GET => 'models'], [DELETE => 'models'],
                 [POST => 'embeddings', body => 'not even JSON', content_type => 'text/plain']);
    for my $c (@cases) {
        my ($m, $path, @o) = @$c;
        mock_reset();
        my ($res) = call($m => M . "/$id/proxy/$path", token => $tok, @o);
        refused($res, "$m $path: 429");
        is scalar @{ captured() }, 0, "$m $path: nothing reached the provider";
    }
    is usage_of($id), 30, 'usage still 30';
    is row($id)->{last_used_at}, $stamp, 'last_used_at unchanged';
};

subtest 'the limit is checked on every call: raising it opens, lowering it closes' => sub {
    set_limit($id, 31);
    mock_reset();
    my ($res) = chat($id);
    is $res->code, 200, 'limit 31 > usage 30: 200';
    is usage_of($id), 45, 'usage 45';
    ($res) = chat($id);
    refused($res, 'usage 45 >= 31: 429');
    set_limit($id, undef);
    ($res) = chat($id);
    is $res->code, 200, 'no limit: 200';
    ($res) = chat($id);
    is $res->code, 200, 'no limit: 200 again';
    is usage_of($id), 75, 'usage 75';
    set_limit($id, 75);
    ($res) = chat($id);
    refused($res, 'usage 75 = limit 75: 429 (reached means >=)');
    set_limit($id, 76);
    ($res) = chat($id, mock_prompt_tokens => 0, mock_completion_tokens => 1);
    is $res->code, 200, 'usage 75 < limit 76: 200';
    ($res) = chat($id);
    refused($res, 'usage 76 = limit 76: 429');
    is scalar @{ captured() }, 4, 'only the admitted calls were forwarded';
};

subtest 'usageLimit 0: refused from the first call' => sub {
    my $aid = create_ok(M, $tok, { provider => 'anthropic', apiKey => $AKEY, usageLimit => 0 }, 'anthropic, limit 0')
        // rand_uuid();
    mock_reset();
    my ($res) = call(POST => M . "/$aid/proxy/messages", token => $tok, json => { model => 'c', max_tokens => 1 });
    refused($res, 'limit 0: 429');
    is scalar @{ captured() }, 0, 'nothing forwarded';
    is usage_of($aid), 0, 'usage 0';
    ok !defined row($aid)->{last_used_at}, 'never used';
};

subtest 'an inactive provider over its limit says PROVIDER_INACTIVE or USAGE_LIMIT_EXCEEDED, never forwards' => sub {
    call(PUT => M . "/$id", token => $tok, json => { isActive => JSON::PP::false });
    mock_reset();
    my ($res, $d) = chat($id);
    ok $res->code == 403 || $res->code == 429, 'refused (' . $res->code . ')';
    is scalar @{ captured() }, 0, 'nothing forwarded';
    call(PUT => M . "/$id", token => $tok, json => { isActive => JSON::PP::true });
};

# ------------------------------------------------------------ concurrency
# $n clients, client $i starting at t0 + $i * $stagger; each reports its
# status, error code, and when it started and finished (wall clock).
sub wave {
    my (%o) = @_;
    my ($port) = Apache::TestRequest::hostport() =~ /:(\d+)\z/;
    my $url = "http://127.0.0.1:$port" . M . "/$o{id}/proxy/chat/completions";
    my $t0 = time + 0.5;
    my @kids;
    for my $i (0 .. $o{n} - 1) {
        pipe(my $r, my $w) or die "pipe: $!";
        my $pid = fork // die "fork: $!";
        if (!$pid) {
            close $r;
            my $ua = LWP::UserAgent->new(timeout => 60, keep_alive => 0);
            my $req = HTTP::Request->new(POST => $url, [ Authorization => "Bearer $tok",
                                                          'Content-Type' => 'application/json' ], $o{body});
            my $at = $t0 + $i * ($o{stagger} // 0);
            sleep($at - time) if $at > time;
            my $start = time;
            my $res = $ua->request($req);
            my $end = time;
            my $err = '';
            if ($res->code != 200) { $err = eval { $JSON->decode($res->content)->{error} } // '?' }
            $err = '?' if ref $err;
            print {$w} join(' ', $res->code, $start, $end, $err, $res->header('Retry-After') ? 1 : 0), "\n";
            close $w;
            POSIX::_exit(0);
        }
        close $w;
        push @kids, [$pid, $r];
    }
    my @out;
    for (@kids) {
        my ($pid, $r) = @$_;
        my $line = <$r> // "0 0 0 none 0\n";
        close $r;
        waitpid $pid, 0;
        my ($code, $start, $end, $err, $ra) = split ' ', $line;
        push @out, { code => $code, start => $start, end => $end, err => $err, retry_after => $ra };
    }
    @out;
}

# What the guarantee says of a wave against limit $limit, $per tokens a call.
sub guarantee_ok {
    my ($cid, $limit, $per, $calls, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    subtest $name => sub {
        my @ok  = grep { $_->{code} == 200 } @$calls;
        my @no  = grep { $_->{code} == 429 } @$calls;
        is scalar(@ok) + scalar(@no), scalar @$calls, 'every call answered 200 or 429'
            or diag join ' ', map { $_->{code} } @$calls;
        is scalar(grep { $_->{err} ne 'USAGE_LIMIT_EXCEEDED' } @no), 0, 'every 429 is USAGE_LIMIT_EXCEEDED';
        is scalar(grep { $_->{retry_after} } @no), 0, 'no 429 has Retry-After';
        my $need = int(($limit + $per - 1) / $per);    # admitted calls it takes to reach the limit
        ok @ok >= $need, "at least $need calls admitted (a 429 needs usage >= $limit first)"
            or diag scalar(@ok) . ' admitted';
        is usage_of($cid), $per * @ok, "current_usage is exactly $per x the " . scalar(@ok) . ' admitted calls';
        is scalar @{ captured() }, scalar @ok, 'the provider saw exactly the admitted calls';
        # once the call that brought usage to the limit had finished (usage
        # written), every call started later must have been refused
        my @ends = sort { $a <=> $b } map { $_->{end} } @ok;
        if (@ends >= $need) {
            my $cut = $ends[$need - 1];
            my @late = grep { $_->{start} > $cut } @$calls;
            my @bad  = grep { $_->{code} != 429 } @late;
            is scalar @bad, 0, scalar(@late) . ' calls started after the limit was reached and written: all 429'
                or diag join ', ', map { sprintf '%d started %.3f s after the cut', $_->{code}, $_->{start} - $cut } @bad;
        }
        mock_reset();
        my ($res) = call(POST => M . "/$cid/proxy/chat/completions", token => $tok, json => { model => 'x' });
        refused($res, 'a call after the wave: 429');
        is scalar @{ captured() }, 0, 'and not forwarded';
    };
}

{
    my $cid = create_ok(M, $tok, { provider => 'groq', apiKey => 'gsk_' . rand_hex(6) . '_TESTSECRET_pxlim',
                                   usageLimit => 25 }, 'groq, limit 25') // rand_uuid();
    mock_reset();
    my @calls = wave(id => $cid, n => 10, stagger => 0, body => $JSON->encode(
        { model => 'x', mock_prompt_tokens => 4, mock_completion_tokens => 6 }));
    guarantee_ok($cid, 25, 10, \@calls, '10 plain calls at once against limit 25 (10 tokens each)');
}
{
    my $cid = create_ok(M, $tok, { provider => 'gemini', apiKey => 'AIza' . rand_hex(6) . 'TESTSECRETpxlim',
                                   usageLimit => 25 }, 'gemini, limit 25') // rand_uuid();
    mock_reset();
    # streams of ~0.4 s each, a new one every 0.12 s: some admitted before any
    # finished, some started after the limit was written
    my @calls = wave(id => $cid, n => 12, stagger => 0.12, body => $JSON->encode(
        { model => 'x', stream => JSON::PP::true, mock_delay_ms => 100,
          mock_prompt_tokens => 4, mock_completion_tokens => 6 }));
    guarantee_ok($cid, 25, 10, \@calls, '12 staggered streamed calls against limit 25 (10 tokens each)');
    my @late = grep { $_->{code} == 429 } @calls;
    ok @late >= 1, 'the wave did reach the limit while calls kept coming (some 429)';
}
{
    my $cid = create_ok(M, $tok, { provider => 'openrouter', apiKey => 'sk-or-v1-' . rand_hex(6) . '-TESTSECRET-pxlim',
                                   usageLimit => 1 }, 'openrouter, limit 1') // rand_uuid();
    mock_reset();
    my @calls = wave(id => $cid, n => 8, stagger => 0.05, body => $JSON->encode(
        { model => 'x', mock_prompt_tokens => 1, mock_completion_tokens => 2 }));
    guarantee_ok($cid, 1, 3, \@calls, '8 calls against limit 1 (3 tokens each)');
}

subtest 'no key in any answer or in the error log' => sub {
    my @keys = ($KEY, $AKEY);
    is scalar(grep { !no_secret_in($_->as_string, @keys) } @responses), 0, 'no answer holds a key';
    ok no_secret_in(error_log(), @keys), 'the error log holds no key';
};

done_testing();
