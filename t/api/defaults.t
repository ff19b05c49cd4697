# isDefault (at most one default per user), the one-row-per-provider rule,
# and both of them under concurrent requests.
use strict;
use warnings;
use Apache::Test qw(-withtestmore);
use Apache::TestRequest ();
use lib 't/lib', 't/fixtures';
use AiprovTest;
use ApiAssert;
use POSIX ();

reset_db();

my %KEY = (
    openai     => 'sk-TESTSECRET-def-openai-0001',
    anthropic  => 'sk-ant-TESTSECRET-def-0002',
    openrouter => 'sk-or-TESTSECRET-def-0003',
    groq       => 'gsk_TESTSECRET-def-0004',
    gemini     => 'AIzaTESTSECRET-def-0005',
    cohere     => 'TESTSECRET-def-cohere-0006',
);
my @SEVEN = qw(openrouter openai anthropic ollama groq gemini cohere);

sub body_for {
    my ($p, %extra) = @_;
    my %b = (provider => $p, %extra);
    if ($p eq 'ollama') { $b{apiUrl} = 'http://localhost:11434' }
    else                { $b{apiKey} //= $KEY{$p} }
    \%b;
}

# Defaults as the API shows them and as the DB holds them.
sub api_defaults {
    my $tok = shift;
    [ sort map { $_->{id} } grep { JSON::PP::is_bool($_->{isDefault}) && $_->{isDefault} }
          @{ (fresh((api(GET => M, token => $tok))[0]) || {})->{providers} || [] } ];
}
sub db_defaults {
    my $user = shift;
    db()->selectcol_arrayref('SELECT id FROM ai_provider WHERE user_id = ? AND is_default ORDER BY id', undef, $user);
}
sub most_defaults_of_any_user {
    my ($n) = db()->selectrow_array(
        'SELECT COALESCE(MAX(n), 0) FROM (SELECT COUNT(*) AS n FROM ai_provider WHERE is_default GROUP BY user_id) t');
    $n;
}
sub defaults_are {
    my ($user, $tok, $want, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    subtest $name => sub {
        my @w = sort grep { defined } @$want;
        is_deeply api_defaults($tok), \@w, 'API: ' . (@w ? 'exactly that default' : 'no default');
        is_deeply db_defaults($user), \@w, 'DB: the same';
        cmp_ok most_defaults_of_any_user(), '<=', 1, 'no user has two defaults';
    };
}
sub put_ok {
    my ($tok, $id, $json, $name) = @_;
    my ($res) = api(PUT => M . '/' . ($id // rand_uuid()), token => $tok, json => $json);
    is $res->code, 200, $name;
}

my $u1 = make_user('def-1'); my $t1 = session($u1);
my $u2 = make_user('def-2'); my $t2 = session($u2);

my $g2 = create_ok(M, $t2, body_for('groq', isDefault => JSON::PP::true), "user 2: groq, default");
defaults_are($u2, $t2, [$g2], "user 2's default");

my $A = create_ok(M, $t1, body_for('openai', isDefault => JSON::PP::true), 'A (openai) as default');
defaults_are($u1, $t1, [$A], 'A is the default');

my $B = create_ok(M, $t1, body_for('anthropic', isDefault => JSON::PP::true), 'B (anthropic) as default');
defaults_are($u1, $t1, [$B], 'creating B as default cleared A');

my $C = create_ok(M, $t1, body_for('cohere', isDefault => JSON::PP::false), 'C (cohere), isDefault false');
my $D = create_ok(M, $t1, body_for('gemini'), 'D (gemini), isDefault absent');
defaults_are($u1, $t1, [$B], 'non-default creates leave B the default');

put_ok($t1, $A, { isDefault => JSON::PP::true }, 'PUT A isDefault true');
defaults_are($u1, $t1, [$A], 'A is the default again, B cleared');

put_ok($t1, $A, { isDefault => JSON::PP::true }, 'PUT A isDefault true again');
defaults_are($u1, $t1, [$A], 'idempotent');

put_ok($t1, $B, { isDefault => JSON::PP::false }, 'PUT B (not default) isDefault false');
defaults_are($u1, $t1, [$A], 'A is untouched');

put_ok($t1, $A, { isDefault => JSON::PP::false }, 'PUT A isDefault false');
defaults_are($u1, $t1, [], 'no default at all');

put_ok($t1, $C, { isDefault => JSON::PP::true, keyLabel => 'C!', usageLimit => 7 }, 'PUT C default with other fields');
defaults_are($u1, $t1, [$C], 'C is the default');
is row($C // rand_uuid()) && row($C)->{key_label}, 'C!', 'and its other fields changed with it';

subtest 'a refused PUT does not clear the default' => sub {
    my $before = snapshot();
    my ($res) = api(PUT => M . '/' . ($D // rand_uuid()), token => $t1,
                    json => { isDefault => JSON::PP::true, usageLimit => -1 });
    is_error($res, 400, 'INVALID_REQUEST', 'isDefault true with a bad usageLimit');
    is_deeply snapshot(), $before, 'nothing changed';
};
defaults_are($u1, $t1, [$C], 'C is still the default');
defaults_are($u2, $t2, [$g2], "user 2's default was never touched");

subtest 'duplicate provider' => sub {
    my $before = snapshot();
    my $rows = count_rows();
    my ($res) = api(POST => M, token => $t1, json => body_for('openai'));
    is_error($res, 409, 'DUPLICATE_PROVIDER', 'same provider again');
    ($res) = api(POST => M, token => $t1, json => body_for('openai', apiKey => 'sk-TESTSECRET-def-openai-other'));
    is_error($res, 409, 'DUPLICATE_PROVIDER', 'same provider, another key');
    ($res) = api(POST => M, token => $t1, json => body_for('openai', isDefault => JSON::PP::true, keyLabel => 'dup'));
    is_error($res, 409, 'DUPLICATE_PROVIDER', 'same provider as default');
    is count_rows(), $rows, 'row count unchanged';
    is_deeply snapshot(), $before, 'nothing changed: the default was not cleared by the refused create';
    ($res) = api(POST => M, token => $t2, json => body_for('groq'));
    is_error($res, 409, 'DUPLICATE_PROVIDER', "user 2's groq again");
    my $o = create_ok(M, $t1, body_for('ollama'), 'a keyless ollama');
    ($res) = api(POST => M, token => $t1, json => body_for('ollama'));
    is_error($res, 409, 'DUPLICATE_PROVIDER', 'keyless ollama again');
};
defaults_are($u1, $t1, [$C], 'C is still the default after the duplicates');

subtest 'deleting the default' => sub {
    my ($res) = api(DELETE => M . '/' . ($C // rand_uuid()), token => $t1);
    is $res->code, 200, 'DELETE C';
    cmp_ok scalar @{ db_defaults($u1) }, '<=', 1, 'at most one default';
    my $n = create_ok(M, $t1, body_for('cohere', isDefault => JSON::PP::true), 'cohere again, as default');
    defaults_are($u1, $t1, [$n], 'the new one is the only default');
};

# ---------------------------------------------------------------- races
# race(@coderefs): runs each in its own process, all released at once;
# returns what each returned (a short string).
sub race {
    my @jobs = @_;
    db()->{AutoInactiveDestroy} = 1;    # children must not close the parent's DB connection
    pipe(my $go_r, my $go_w) or die "pipe: $!";
    my @kids;
    for my $job (@jobs) {
        pipe(my $r, my $w) or die "pipe: $!";
        my $pid = fork;
        die "fork: $!" unless defined $pid;
        if (!$pid) {
            close $go_w; close $r;
            sysread $go_r, my $x, 1;    # blocks until the parent closes its end
            Apache::TestRequest::user_agent(reset => 1);    # a client of its own
            my $out = eval { $job->() };
            $out = 'died: ' . ($@ || 'no result') unless defined $out;
            syswrite $w, $out;
            close $w;
            POSIX::_exit(0);
        }
        close $w;
        push @kids, [ $pid, $r ];
    }
    close $go_r;
    close $go_w;    # go
    my @out;
    for my $k (@kids) {
        my ($pid, $r) = @$k;
        my $o = do { local $/; readline $r } // '';
        close $r;
        waitpid $pid, 0;
        push @out, $o;
    }
    @out;
}
sub tally { my %n; $n{$_}++ for @_; join ', ', map { "$_ x$n{$_}" } sort keys %n }

subtest 'ten parallel creates of the same provider' => sub {
    for my $round (1 .. 3) {
        my $u = make_user("def-race-$round");
        my $t = session($u);
        my @keys = map { "sk-or-TESTSECRET-race-$round-$_" } 1 .. 10;
        my @out = race(map { my $k = $_; sub {
            my ($res) = api(POST => M, token => $t, json => { provider => 'openrouter', apiKey => $k });
            my $d = fresh($res) || {};
            $res->code . ' ' . ($d->{error} // $d->{id} // '-');
        } } @keys);
        my @codes = map { (split / /)[0] } @out;
        is scalar(grep { $_ eq '201' } @codes), 1, "round $round: exactly one 201"
            or diag tally(@codes);
        is scalar(grep { $_ eq '409 DUPLICATE_PROVIDER' } @out), 9, "round $round: nine 409 DUPLICATE_PROVIDER"
            or diag tally(map { s/ [0-9a-f-]{36}$//r } @out);
        my $rows = db()->selectall_arrayref('SELECT id, key_hash FROM ai_provider WHERE user_id = ?', { Slice => {} }, $u);
        is scalar @$rows, 1, "round $round: exactly one row";
        my ($winner) = map { (split / /)[1] } grep { /^201 / } @out;
        my ($wi) = grep { $out[$_] =~ /^201 / } 0 .. $#out;
        is $rows->[0]{id}, $winner, "round $round: the row is the one the 201 named";
        is $rows->[0]{key_hash}, defined $wi ? sha256_hex($keys[$wi]) : 'none', "round $round: with the winner's key";
    }
};

subtest 'parallel creates of seven providers, each as default' => sub {
    my $u = make_user('def-race-seven');
    my $t = session($u);
    my @out = race(map { my $p = $_; sub {
        my ($res) = api(POST => M, token => $t, json => body_for($p, isDefault => JSON::PP::true));
        $res->code;
    } } @SEVEN);
    is tally(@out), tally(('201') x 7), 'all seven created';
    is scalar @{ db_defaults($u) }, 1, 'exactly one default';
    is_deeply api_defaults($t), db_defaults($u), 'the API agrees';
};

subtest 'parallel PUT isDefault on different rows' => sub {
    my $u = make_user('def-race-put');
    my $t = session($u);
    my @ids = map { create_ok(M, $t, body_for($_), "create $_") // rand_uuid() } @SEVEN;
    for my $round (1 .. 3) {
        my @out = race(map { my $id = $_; sub {
            my ($res) = api(PUT => M . "/$id", token => $t, json => { isDefault => JSON::PP::true });
            $res->code;
        } } @ids);
        is tally(@out), tally(('200') x 7), "round $round: every PUT succeeded";
        my $d = db_defaults($u);
        is scalar @$d, 1, "round $round: exactly one default";
        is_deeply api_defaults($t), $d, "round $round: the API agrees";
        cmp_ok most_defaults_of_any_user(), '<=', 1, "round $round: no user has two";
    }
    # and mixed with clears
    my @out = race(map { my ($id, $on) = ($ids[$_], $_ % 2 ? JSON::PP::true : JSON::PP::false); sub {
        my ($res) = api(PUT => M . "/$id", token => $t, json => { isDefault => $on });
        $res->code;
    } } 0 .. $#ids);
    is tally(@out), tally(('200') x 7), 'mixed set/clear: every PUT succeeded';
    cmp_ok scalar @{ db_defaults($u) }, '<=', 1, 'mixed set/clear: at most one default';
};

defaults_are($u1, $t1, api_defaults($t1), 'user 1 still consistent');
defaults_are($u2, $t2, [$g2], "user 2's default survived everything");

done_testing();
